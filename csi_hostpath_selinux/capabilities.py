"""Whether a volume can serve a volume capability: one check for the controller
(ValidateVolumeCapabilities) and the node (NodeStageVolume, NodePublishVolume)."""

from __future__ import annotations

from .models import AccessType, Capability, Volume


def mismatch(vol: Volume, cap: Capability) -> str | None:
    """Why vol cannot serve cap, in words for the pod author; None when it can.

    Every volume of this driver lives on one node, so only single-node access modes are served;
    the access type (block or filesystem) is fixed at creation, and so is the filesystem.
    """
    if not cap.access_mode.single_node:
        return (
            f"access mode {cap.access_mode.name} is not supported: volume {vol.id} lives on one "
            "node only (use ReadWriteOnce or ReadWriteOncePod)"
        )
    if cap.access_type is not vol.access_type:
        return (
            f"volume {vol.id} was created for {vol.access_type.value} access; this request "
            f"asks for {cap.access_type.value} access"
        )
    fs_types = {cap.fs_type, vol.fs_type}
    if cap.access_type is AccessType.MOUNT and "" not in fs_types and len(fs_types) == 2:
        return (
            f"volume {vol.id} holds a {vol.fs_type} filesystem; this request asks for "
            f"fsType {cap.fs_type}"
        )
    return None
