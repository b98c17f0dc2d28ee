"""NodeGetVolumeStats' and NodeExpandVolume's domain side: is the volume at the path the request
names (the one check of `mounttable.MountView.volume_at`), and growing it where it is staged."""

from __future__ import annotations

import logging

from . import sizing
from .errors import InvalidArgument, NotMountedAt, NotStaged
from .models import AccessType, Volume
from .node_context import NodeContext

log = logging.getLogger(__name__)


class NodeUsage:
    """Where a volume can be measured, and its growth on the node."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def published_path(self, vol: Volume, volume_path: str) -> str:
        """volume_path when the volume is published or staged there and it is the volume that
        is mounted there (not merely something); NOT_FOUND otherwise, naming why (outside
        kubelet's directory, not absolute, ...), touching nothing: the spec's code for "not
        published at that path"."""
        ctx = self.ctx
        try:
            path = ctx.known_path(volume_path, "volume_path")
        except InvalidArgument as exc:
            raise NotMountedAt(
                vol.id, volume_path, f"volume {vol.id} is not at {volume_path!r}: {exc.message}"
            ) from exc
        stagings = {s.staging_path: s for s in ctx.catalog.stagings(vol.id)}
        view = ctx.view()
        for pub in ctx.catalog.publications(vol.id):
            st = stagings.get(pub.staging_path)
            if pub.target_path == path and st and view.volume_at(st, path, pub.device):
                return path
        st = stagings.get(path)
        if st is not None and view.volume_at(st, path) is not None:
            return path
        raise NotMountedAt(vol.id, path, f"volume {vol.id} is not mounted at {path}")

    def expand(
        self,
        volume_id: str,
        volume_path: str,
        staging_path: str,
        required_bytes: int = 0,
        limit_bytes: int = 0,
    ) -> int:
        """Grow the volume where it is staged (and its storage, when the request asks for more
        than the catalog has: on a node-local driver the node can do the controller's part)."""
        ctx = self.ctx
        vol = ctx.volume(volume_id)
        self.published_path(vol, volume_path)
        backend = ctx.backends[vol.kind]
        with ctx.locks.hold(vol.id):
            sizing.check_range(required_bytes, limit_bytes)
            size = vol.capacity_bytes
            if required_bytes > size:
                size = sizing.choose_size(
                    required_bytes,
                    limit_bytes,
                    ctx.config.default_volume_bytes,
                    backend.minimum_bytes(vol.fs_type),
                    ctx.config.max_volume_bytes,
                )
                backend.expand(vol, size)
                ctx.catalog.update_capacity(vol.id, size)
            staged = [s for s in ctx.catalog.stagings(vol.id) if ctx.staging_alive(vol, s)]
            if staging_path:
                staged = [s for s in staged if s.staging_path == staging_path] or staged
            if not staged:
                raise NotStaged(vol.id, staging_path, f"volume {vol.id} is not staged on this node")
            st = staged[0]
            mount_path = st.staging_path if vol.access_type is AccessType.MOUNT else None
            backend.node_expand(vol, st.device, mount_path)
            log.info("grew volume %s on the node to %d bytes", vol.id, size)
            return size
