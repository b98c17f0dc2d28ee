"""Conversions between CSI protobuf messages and the driver's plain data."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from ._proto import csi_pb2 as pb
from .config import DriverConfig
from .errors import InvalidArgument
from .models import (
    AccessMode,
    AccessType,
    Capability,
    ContentSource,
    HealthIssue,
    HealthStatus,
    Snapshot,
    SourceType,
    Volume,
)


def capability(cap: pb.VolumeCapability, field: str = "volume_capability") -> Capability:
    flags: tuple[str, ...] = ()
    if cap.HasField("block"):
        access_type = AccessType.BLOCK
        fs_type, group = "", ""
    elif cap.HasField("mount"):
        access_type = AccessType.MOUNT
        fs_type = cap.mount.fs_type
        flags = tuple(cap.mount.mount_flags)
        group = cap.mount.volume_mount_group
    else:
        raise InvalidArgument(f"{field} needs an access type: mount or block")
    if not cap.HasField("access_mode"):
        raise InvalidArgument(f"{field}.access_mode is required")
    try:
        mode = AccessMode(cap.access_mode.mode)
    except ValueError:
        raise InvalidArgument(
            f"{field}.access_mode {cap.access_mode.mode} is not a mode the CSI spec defines"
        ) from None
    if mode is AccessMode.UNKNOWN:
        raise InvalidArgument(f"{field}.access_mode must be set")
    return Capability(
        access_type=access_type,
        access_mode=mode,
        fs_type=fs_type,
        mount_flags=flags,
        volume_mount_group=group,
    )


def required_capability(message: object, field: str = "volume_capability") -> Capability:
    """The capability in message.<field>, which must be present."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        raise InvalidArgument(f"{field} is required")
    cap: pb.VolumeCapability = getattr(message, field)
    return capability(cap, field)


def content_source(source: pb.VolumeContentSource) -> ContentSource | None:
    if source.HasField("snapshot"):
        if not source.snapshot.snapshot_id:
            raise InvalidArgument("volume_content_source.snapshot.snapshot_id is required")
        return ContentSource(type=SourceType.SNAPSHOT, id=source.snapshot.snapshot_id)
    if source.HasField("volume"):
        if not source.volume.volume_id:
            raise InvalidArgument("volume_content_source.volume.volume_id is required")
        return ContentSource(type=SourceType.VOLUME, id=source.volume.volume_id)
    return None


@functools.cache
def topology(config: DriverConfig) -> pb.Topology:
    """This node's topology segment (built once: messages assigned into others are copied)."""
    return pb.Topology(segments={config.topology_key: config.node_id})


def volume(vol: Volume, config: DriverConfig) -> pb.Volume:
    out = pb.Volume(
        volume_id=vol.id,
        capacity_bytes=vol.capacity_bytes,
        volume_context={"kind": vol.kind},
        accessible_topology=[topology(config)],
    )
    source = vol.content_source
    if source is not None and source.type is SourceType.SNAPSHOT:
        out.content_source.snapshot.snapshot_id = source.id
    elif source is not None and source.type is SourceType.VOLUME:
        out.content_source.volume.volume_id = source.id
    return out


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def snapshot(snap: Snapshot, group_id: str | None = None) -> pb.Snapshot:
    """The spec's Snapshot; with group_id, the group it must be deleted with."""
    return pb.Snapshot(
        snapshot_id=snap.id,
        source_volume_id=snap.source_volume_id,
        size_bytes=snap.size_bytes,
        creation_time=timestamp(snap.created_at),
        ready_to_use=snap.ready,
        group_snapshot_id=group_id or "",
    )


def segments(topologies: object) -> list[Mapping[str, str]]:
    return [dict(t.segments) for t in topologies]  # type: ignore[attr-defined]


def volume_health(volume_id: str, issues: list[HealthIssue]) -> pb.VolumeHealth:
    return pb.VolumeHealth(
        volume_id=volume_id,
        health_statuses=[
            pb.VolumeHealth.VolumeHealthEntry(
                status=pb.VolumeHealthErrorType.Value(i.status.value),
                reason=i.reason,
                message=i.message,
            )
            for i in issues
        ],
    )


def storage_health(
    issues: list[HealthIssue],
) -> list[pb.NodeGetStorageHealthResponse.StorageBackendHealth]:
    return [
        pb.NodeGetStorageHealthResponse.StorageBackendHealth(
            status=pb.StorageHealthErrorType.Value(i.status.value),
            reason=i.reason,
            message=i.message,
        )
        for i in issues
        if i.status in (HealthStatus.STORAGE_DEGRADED, HealthStatus.STORAGE_UNREACHABLE)
    ]
