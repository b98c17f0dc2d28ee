"""The CSI GroupController service: volume group snapshots, around GroupSnapshots."""

from __future__ import annotations

import grpc

from . import convert
from ._proto import csi_pb2 as pb
from ._proto import csi_pb2_grpc as rpc
from .group_snapshots import GroupSnapshots, GroupView

_RPC = pb.GroupControllerServiceCapability.RPC


class GroupControllerService(rpc.GroupControllerServicer):
    CAPABILITIES = (_RPC.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT,)

    def __init__(self, groups: GroupSnapshots) -> None:
        self.groups = groups

    def GroupControllerGetCapabilities(
        self, request: pb.GroupControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.GroupControllerGetCapabilitiesResponse:
        return pb.GroupControllerGetCapabilitiesResponse(
            capabilities=[
                pb.GroupControllerServiceCapability(rpc=_RPC(type=t)) for t in self.CAPABILITIES
            ]
        )

    def CreateVolumeGroupSnapshot(
        self, request: pb.CreateVolumeGroupSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.CreateVolumeGroupSnapshotResponse:
        view = self.groups.create(
            request.name, list(request.source_volume_ids), dict(request.parameters)
        )
        return pb.CreateVolumeGroupSnapshotResponse(group_snapshot=group_snapshot(view))

    def GetVolumeGroupSnapshot(
        self, request: pb.GetVolumeGroupSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.GetVolumeGroupSnapshotResponse:
        view = self.groups.get(request.group_snapshot_id, list(request.snapshot_ids))
        return pb.GetVolumeGroupSnapshotResponse(group_snapshot=group_snapshot(view))

    def DeleteVolumeGroupSnapshot(
        self, request: pb.DeleteVolumeGroupSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.DeleteVolumeGroupSnapshotResponse:
        self.groups.delete(request.group_snapshot_id, list(request.snapshot_ids))
        return pb.DeleteVolumeGroupSnapshotResponse()


def group_snapshot(view: GroupView) -> pb.VolumeGroupSnapshot:
    """The spec's message; every member carries the group's id (it cannot be deleted alone)."""
    snapshots = []
    for snap in view.snapshots:
        message = convert.snapshot(snap)
        message.group_snapshot_id = view.group.id
        snapshots.append(message)
    return pb.VolumeGroupSnapshot(
        group_snapshot_id=view.group.id,
        snapshots=snapshots,
        creation_time=convert.timestamp(view.group.created_at),
        ready_to_use=view.ready,
    )
