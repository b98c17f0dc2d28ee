"""CSI ephemeral inline volumes: created at NodePublishVolume, deleted at NodeUnpublishVolume.

kubelet names an inline volume with its own handle (not one of this driver's ids) and gives its
attributes in volume_context. The volume is recorded under the name "ephemeral-<handle>", staged
at a private path under the state directory and published like any other; unpublish undoes all
three. kubelet never sends an SELinux context for inline volumes.

It is the one module that uses both sides: it creates the volume with the controller's
VolumeManager (the default kind unless the attributes name one) and mounts it with the node's
NodeVolumes; the node modules themselves never import controller logic.
"""

from __future__ import annotations

import logging

from .config import DriverConfig
from .errors import InvalidArgument
from .models import Capability, Volume
from .mounting import NodeVolumes, PublishArgs, StageArgs
from .units import parse_size
from .volumes import (
    EPHEMERAL_CONTEXT_KEY,
    FSTYPE_PARAMETER,
    CapacityRange,
    VolumeManager,
)

log = logging.getLogger(__name__)

#: volume_context keys an inline volume may set (besides the ones kubelet adds itself).
SIZE_KEY = "size"
KUBELET_KEYS_PREFIX = "csi.storage.k8s.io/"


def is_ephemeral(volume_context: dict[str, str]) -> bool:
    return volume_context.get(EPHEMERAL_CONTEXT_KEY, "").lower() == "true"


def name_for(handle: str) -> str:
    return f"ephemeral-{handle}"


class EphemeralVolumes:
    def __init__(self, config: DriverConfig, volumes: VolumeManager, node: NodeVolumes) -> None:
        self.config = config
        self.volumes = volumes
        self.node = node

    def staging_path(self, vol: Volume) -> str:
        return str(self.config.state_dir / "ephemeral" / vol.id)

    def find(self, handle: str) -> Volume | None:
        vol = self.volumes.catalog.volume_by_name(name_for(handle))
        return vol if vol is not None and vol.ephemeral else None

    def publish(
        self,
        handle: str,
        target_path: str,
        capability: Capability,
        read_only: bool,
        volume_context: dict[str, str],
    ) -> None:
        attrs = {k: v for k, v in volume_context.items() if not k.startswith(KUBELET_KEYS_PREFIX)}
        size_text = attrs.pop(SIZE_KEY, "")
        try:
            size = parse_size(size_text) if size_text else 0
        except ValueError as exc:
            raise InvalidArgument(f"volume attribute size: {exc}") from exc
        if "fsType" in attrs:
            attrs[FSTYPE_PARAMETER] = attrs.pop("fsType")
        vol = self.volumes.create(
            name=name_for(handle),
            capacity=CapacityRange(size, 0),
            capabilities=[capability],
            parameters=attrs,
            secrets={},
            source=None,
            ephemeral=True,
        )
        staging = self.staging_path(vol)
        (self.config.state_dir / "ephemeral").mkdir(mode=0o700, exist_ok=True)
        self.node.stage(StageArgs(vol.id, staging, capability, {}, internal=True))
        self.node.publish(
            PublishArgs(vol.id, staging, target_path, capability, read_only, internal=True)
        )
        log.info("published inline volume %s (%s) at %s", handle, vol.id, target_path)

    def unpublish(self, vol: Volume, target_path: str) -> None:
        self.node.unpublish(vol.id, target_path)
        staging = self.staging_path(vol)
        self.node.unstage(vol.id, staging, internal=True)
        self.volumes.delete(vol.id, {})
        log.info("deleted inline volume %s", vol.id)
