"""Builders for the CSI requests kubelet and external-provisioner send."""

from __future__ import annotations

from typing import TypeAlias

from csi_hostpath_selinux._proto import csi_pb2 as pb

# The type of an access mode in the generated stubs (an int NewType, so a bare int does not pass).
AccessModeValue: TypeAlias = pb.VolumeCapability.AccessMode.Mode.ValueType

GIB = 1024**3
MIB = 1024**2
RWO = pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
RWOP = pb.VolumeCapability.AccessMode.SINGLE_NODE_SINGLE_WRITER
L1 = "system_u:object_r:container_file_t:s0:c1,c2"
L2 = "system_u:object_r:container_file_t:s0:c3,c4"


def mount_cap(
    fs_type: str = "", flags: tuple[str, ...] = (), mode: AccessModeValue = RWO
) -> pb.VolumeCapability:
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
        access_mode=pb.VolumeCapability.AccessMode(mode=mode),
    )


def block_cap(mode: AccessModeValue = RWO) -> pb.VolumeCapability:
    return pb.VolumeCapability(
        block=pb.VolumeCapability.BlockVolume(),
        access_mode=pb.VolumeCapability.AccessMode(mode=mode),
    )


def context_flag(label: str) -> str:
    """The flag exactly as kubelet appends it (fmt.Sprintf("context=%q", label))."""
    return f'context="{label}"'


def create(
    name: str, cap: pb.VolumeCapability, size: int = 64 * MIB, **params: str
) -> pb.CreateVolumeRequest:
    return pb.CreateVolumeRequest(
        name=name,
        capacity_range=pb.CapacityRange(required_bytes=size),
        volume_capabilities=[cap],
        parameters=params,
    )
