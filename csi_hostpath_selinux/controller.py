"""The CSI Controller service: request validation and conversion around VolumeManager."""

from __future__ import annotations

import os

import grpc

from . import capabilities, convert
from ._proto import csi_pb2 as pb
from ._proto import csi_pb2_grpc as rpc
from .config import DriverConfig
from .errors import DriverError, InvalidArgument, Unimplemented
from .health import HealthChecker
from .models import Snapshot
from .selinux import SELinuxError, parse_mount_flags
from .snapshots import SnapshotManager
from .state import Catalog
from .statedir import LOW_SPACE_BYTES
from .volumes import CapacityRange, VolumeManager

_RPC = pb.ControllerServiceCapability.RPC


class ControllerService(rpc.ControllerServicer):
    CAPABILITIES = (
        _RPC.CREATE_DELETE_VOLUME,
        _RPC.LIST_VOLUMES,
        _RPC.GET_CAPACITY,
        _RPC.GET_VOLUME,
        _RPC.SINGLE_NODE_MULTI_WRITER,
        _RPC.CREATE_DELETE_SNAPSHOT,
        _RPC.LIST_SNAPSHOTS,
        _RPC.GET_SNAPSHOT,
        _RPC.CLONE_VOLUME,
        _RPC.EXPAND_VOLUME,
        _RPC.MODIFY_VOLUME,
        _RPC.GET_VOLUME_HEALTH,
        _RPC.LIST_VOLUME_HEALTH,
    )

    def __init__(
        self,
        config: DriverConfig,
        catalog: Catalog,
        volumes: VolumeManager,
        snapshots: SnapshotManager,
        health: HealthChecker,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.volumes = volumes
        self.snapshots = snapshots
        self.health = health

    def ControllerGetCapabilities(
        self, request: pb.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.ControllerGetCapabilitiesResponse:
        return pb.ControllerGetCapabilitiesResponse(
            capabilities=[
                pb.ControllerServiceCapability(rpc=_RPC(type=t)) for t in self.CAPABILITIES
            ]
        )

    def CreateVolume(
        self, request: pb.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> pb.CreateVolumeResponse:
        caps = [convert.capability(c, "volume_capabilities") for c in request.volume_capabilities]
        source = (
            convert.content_source(request.volume_content_source)
            if request.HasField("volume_content_source")
            else None
        )
        requisite = (
            convert.segments(request.accessibility_requirements.requisite)
            if request.HasField("accessibility_requirements")
            else []
        )
        if request.mutable_parameters:
            self.volumes.check_mutable(dict(request.mutable_parameters))
        vol = self.volumes.create(
            name=request.name,
            capacity=CapacityRange(
                request.capacity_range.required_bytes, request.capacity_range.limit_bytes
            ),
            capabilities=caps,
            parameters=dict(request.parameters),
            secrets=dict(request.secrets),
            source=source,
            requisite_topology=requisite,
        )
        return pb.CreateVolumeResponse(volume=convert.volume(vol, self.config))

    def DeleteVolume(
        self, request: pb.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> pb.DeleteVolumeResponse:
        self.volumes.delete(request.volume_id, dict(request.secrets))
        return pb.DeleteVolumeResponse()

    def ValidateVolumeCapabilities(
        self, request: pb.ValidateVolumeCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.ValidateVolumeCapabilitiesResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        if not request.volume_capabilities:
            raise InvalidArgument("volume_capabilities is required")
        vol = self.volumes.get(request.volume_id)
        caps = [convert.capability(c, "volume_capabilities") for c in request.volume_capabilities]
        for cap in caps:
            problem = capabilities.mismatch(vol, cap) or ""
            if not problem:
                try:
                    parse_mount_flags(cap.mount_flags)
                except (DriverError, SELinuxError) as exc:
                    problem = exc.message
            if problem:
                return pb.ValidateVolumeCapabilitiesResponse(
                    message=f"volume {vol.id} does not support a requested capability: {problem}"
                )
        confirmed = pb.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=request.volume_context,
            volume_capabilities=request.volume_capabilities,
            parameters=request.parameters,
            mutable_parameters=request.mutable_parameters,
        )
        return pb.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    def ListVolumes(
        self, request: pb.ListVolumesRequest, context: grpc.ServicerContext
    ) -> pb.ListVolumesResponse:
        # No status: published_node_ids lists ControllerPublishVolume's attachments, and this
        # driver has none (attachRequired: false), so it does not advertise
        # LIST_VOLUMES_PUBLISHED_NODES, which the spec allows only with PUBLISH_UNPUBLISH_VOLUME.
        vols, token = self.volumes.list(request.starting_token, request.max_entries)
        return pb.ListVolumesResponse(
            entries=[
                pb.ListVolumesResponse.Entry(volume=convert.volume(v, self.config)) for v in vols
            ],
            next_token=token,
        )

    def ControllerGetVolume(
        self, request: pb.ControllerGetVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerGetVolumeResponse:
        vol = self.volumes.get(request.volume_id)
        # status is required, published_node_ids empty: node publications are not controller
        # publications (see ListVolumes).
        return pb.ControllerGetVolumeResponse(
            volume=convert.volume(vol, self.config),
            status=pb.ControllerGetVolumeResponse.VolumeStatus(),
        )

    def GetCapacity(
        self, request: pb.GetCapacityRequest, context: grpc.ServicerContext
    ) -> pb.GetCapacityResponse:
        if request.HasField("accessible_topology"):
            segment = dict(request.accessible_topology.segments)
            named = [segment[k] for k in self.config.known_topology_keys if k in segment]
            if any(value != self.config.node_id for value in named):
                return pb.GetCapacityResponse(available_capacity=0)
        for cap in request.volume_capabilities:
            convert.capability(cap, "volume_capabilities")
        st = os.statvfs(self.config.state_dir)
        # What CreateVolume accepts: the free space less the catalog's headroom.
        free = max(0, st.f_bavail * st.f_frsize - LOW_SPACE_BYTES)
        if self.config.max_capacity_bytes:
            # --capacity caps what the node provisions in total (images are sparse, so the free
            # space alone would promise more than the disk can hold once volumes fill up).
            left = self.config.max_capacity_bytes - self.catalog.provisioned_bytes()
            free = max(0, min(free, left))
        response = pb.GetCapacityResponse(available_capacity=free)
        response.maximum_volume_size.value = min(free, self.config.max_volume_bytes)
        return response

    def ControllerExpandVolume(
        self, request: pb.ControllerExpandVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerExpandVolumeResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        if not request.HasField("capacity_range"):
            raise InvalidArgument("capacity_range is required")
        if request.HasField("volume_capability"):
            convert.capability(request.volume_capability)
        size, node_needed = self.volumes.expand(
            request.volume_id,
            CapacityRange(
                request.capacity_range.required_bytes, request.capacity_range.limit_bytes
            ),
        )
        return pb.ControllerExpandVolumeResponse(
            capacity_bytes=size, node_expansion_required=node_needed
        )

    def CreateSnapshot(
        self, request: pb.CreateSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.CreateSnapshotResponse:
        snap = self.snapshots.create(request.name, request.source_volume_id)
        return pb.CreateSnapshotResponse(snapshot=self.snapshot_message(snap))

    def DeleteSnapshot(
        self, request: pb.DeleteSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSnapshotResponse:
        self.snapshots.delete(request.snapshot_id)
        return pb.DeleteSnapshotResponse()

    def GetSnapshot(
        self, request: pb.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.GetSnapshotResponse:
        return pb.GetSnapshotResponse(
            snapshot=self.snapshot_message(self.snapshots.get(request.snapshot_id))
        )

    def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> pb.ListSnapshotsResponse:
        snaps, token = self.snapshots.list(
            request.snapshot_id,
            request.source_volume_id,
            request.starting_token,
            request.max_entries,
        )
        return pb.ListSnapshotsResponse(
            entries=[
                pb.ListSnapshotsResponse.Entry(snapshot=self.snapshot_message(s)) for s in snaps
            ],
            next_token=token,
        )

    def snapshot_message(self, snap: Snapshot) -> pb.Snapshot:
        return convert.snapshot(snap, self.catalog.group_of_snapshot(snap.id))

    def ControllerPublishVolume(
        self, request: pb.ControllerPublishVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerPublishVolumeResponse:
        raise Unimplemented(
            "this driver has no attach step (the CSIDriver says attachRequired: false)"
        )

    def ControllerUnpublishVolume(
        self, request: pb.ControllerUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerUnpublishVolumeResponse:
        raise Unimplemented(
            "this driver has no attach step (the CSIDriver says attachRequired: false)"
        )

    def ControllerModifyVolume(
        self, request: pb.ControllerModifyVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerModifyVolumeResponse:
        self.volumes.modify(request.volume_id, dict(request.mutable_parameters))
        return pb.ControllerModifyVolumeResponse()

    def ControllerGetVolumeHealth(
        self, request: pb.ControllerGetVolumeHealthRequest, context: grpc.ServicerContext
    ) -> pb.ControllerGetVolumeHealthResponse:
        vol = self.volumes.get(request.volume_id)
        return pb.ControllerGetVolumeHealthResponse(
            volume_health=convert.volume_health(vol.id, self.health.controller(vol))
        )

    def ControllerListVolumeHealth(
        self, request: pb.ControllerListVolumeHealthRequest, context: grpc.ServicerContext
    ) -> pb.ControllerListVolumeHealthResponse:
        """Abnormal volumes only, as the spec asks; paginated over the catalog."""
        vols, token = self.volumes.list(request.starting_token, request.max_entries)
        entries = []
        for vol in vols:
            issues = self.health.controller(vol)
            if issues:
                entries.append(convert.volume_health(vol.id, issues))
        return pb.ControllerListVolumeHealthResponse(entries=entries, next_token=token)
