"""The CSI Node service: request validation and conversion around NodeVolumes."""

from __future__ import annotations

import os

import grpc

from . import convert, loopdev, paths
from ._proto import csi_pb2 as pb
from ._proto import csi_pb2_grpc as rpc
from .config import DriverConfig
from .ephemeral import EphemeralVolumes, is_ephemeral
from .errors import InvalidArgument
from .health import HealthChecker
from .models import AccessType
from .mounting import NodeVolumes, PublishArgs, StageArgs

_RPC = pb.NodeServiceCapability.RPC


class NodeService(rpc.NodeServicer):
    CAPABILITIES = (
        _RPC.STAGE_UNSTAGE_VOLUME,
        _RPC.GET_VOLUME_STATS,
        _RPC.SINGLE_NODE_MULTI_WRITER,
        _RPC.EXPAND_VOLUME,
        _RPC.GET_VOLUME_HEALTH,
        _RPC.GET_STORAGE_HEALTH,
        _RPC.VOLUME_MOUNT_GROUP,
    )

    def __init__(
        self,
        config: DriverConfig,
        node: NodeVolumes,
        ephemeral: EphemeralVolumes,
        health: HealthChecker,
    ) -> None:
        self.config = config
        self.node = node
        self.ephemeral = ephemeral
        self.health = health

    def NodeGetCapabilities(
        self, request: pb.NodeGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.NodeGetCapabilitiesResponse:
        return pb.NodeGetCapabilitiesResponse(
            capabilities=[pb.NodeServiceCapability(rpc=_RPC(type=t)) for t in self.CAPABILITIES]
        )

    def NodeGetInfo(
        self, request: pb.NodeGetInfoRequest, context: grpc.ServicerContext
    ) -> pb.NodeGetInfoResponse:
        return pb.NodeGetInfoResponse(
            node_id=self.config.node_id,
            max_volumes_per_node=self.config.max_volumes_per_node,
            accessible_topology=convert.topology(self.config),
        )

    def NodeStageVolume(
        self, request: pb.NodeStageVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodeStageVolumeResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        if not request.staging_target_path:
            raise InvalidArgument("staging_target_path is required")
        self.node.stage(
            StageArgs(
                volume_id=request.volume_id,
                staging_path=request.staging_target_path,
                capability=convert.required_capability(request),
                secrets=dict(request.secrets),
            )
        )
        return pb.NodeStageVolumeResponse()

    def NodeUnstageVolume(
        self, request: pb.NodeUnstageVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodeUnstageVolumeResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        self.node.unstage(request.volume_id, request.staging_target_path)
        return pb.NodeUnstageVolumeResponse()

    def NodePublishVolume(
        self, request: pb.NodePublishVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodePublishVolumeResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        if not request.target_path:
            raise InvalidArgument("target_path is required")
        if is_ephemeral(dict(request.volume_context)):
            self.ephemeral.publish(
                request.volume_id,
                request.target_path,
                convert.required_capability(request),
                request.readonly,
                dict(request.volume_context),
            )
            return pb.NodePublishVolumeResponse()
        self.node.publish(
            PublishArgs(
                volume_id=request.volume_id,
                staging_path=request.staging_target_path,
                target_path=request.target_path,
                capability=convert.required_capability(request),
                read_only=request.readonly,
            )
        )
        return pb.NodePublishVolumeResponse()

    def NodeUnpublishVolume(
        self, request: pb.NodeUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodeUnpublishVolumeResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        inline = self.ephemeral.find(request.volume_id)
        if inline is not None:
            self.ephemeral.unpublish(inline, request.target_path)
            return pb.NodeUnpublishVolumeResponse()
        self.node.unpublish(request.volume_id, request.target_path)
        return pb.NodeUnpublishVolumeResponse()

    def NodeGetVolumeStats(
        self, request: pb.NodeGetVolumeStatsRequest, context: grpc.ServicerContext
    ) -> pb.NodeGetVolumeStatsResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        if not request.volume_path:
            raise InvalidArgument("volume_path is required")
        vol = self.node.volume(request.volume_id)
        path = self.node.published_path(vol, request.volume_path)
        # Read through the descriptor the check opened, never through the path string again.
        with paths.opened(path, self.node.trusted(path)) as held:
            if vol.access_type is AccessType.BLOCK:
                size = loopdev.size_bytes(held)
                return pb.NodeGetVolumeStatsResponse(
                    usage=[pb.VolumeUsage(unit=pb.VolumeUsage.BYTES, total=size)],
                )
            st = os.statvfs(held)
        return pb.NodeGetVolumeStatsResponse(
            usage=[
                pb.VolumeUsage(
                    unit=pb.VolumeUsage.BYTES,
                    total=st.f_blocks * st.f_frsize,
                    available=st.f_bavail * st.f_frsize,
                    used=(st.f_blocks - st.f_bfree) * st.f_frsize,
                ),
                pb.VolumeUsage(
                    unit=pb.VolumeUsage.INODES,
                    total=st.f_files,
                    available=st.f_favail,
                    used=st.f_files - st.f_ffree,
                ),
            ],
        )

    def NodeExpandVolume(
        self, request: pb.NodeExpandVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodeExpandVolumeResponse:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        if not request.volume_path:
            raise InvalidArgument("volume_path is required")
        if request.HasField("volume_capability"):
            convert.capability(request.volume_capability)
        size = self.node.expand(
            request.volume_id,
            request.volume_path,
            request.staging_target_path,
            request.capacity_range.required_bytes,
            request.capacity_range.limit_bytes,
        )
        return pb.NodeExpandVolumeResponse(capacity_bytes=size)

    def NodeGetVolumeHealth(
        self, request: pb.NodeGetVolumeHealthRequest, context: grpc.ServicerContext
    ) -> pb.NodeGetVolumeHealthResponse:
        vol = self.node.volume(request.volume_id)
        publish = (
            self.node.known_path(vol, request.volume_publish_path, "volume_publish_path")
            if (request.volume_publish_path)
            else ""
        )
        staging = (
            self.node.known_path(vol, request.staging_target_path, "staging_target_path")
            if (request.staging_target_path)
            else ""
        )
        issues = self.health.node(vol, publish, staging)
        return pb.NodeGetVolumeHealthResponse(volume_health=convert.volume_health(vol.id, issues))

    def NodeGetStorageHealth(
        self, request: pb.NodeGetStorageHealthRequest, context: grpc.ServicerContext
    ) -> pb.NodeGetStorageHealthResponse:
        return pb.NodeGetStorageHealthResponse(
            backend_health=convert.storage_health(self.health.storage())
        )
