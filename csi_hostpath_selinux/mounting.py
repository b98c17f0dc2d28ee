"""The node's volumes: the one object the CSI Node service, inline volumes and start-up
reconciliation use, put together from the node modules, each with one job:

- `node_context`: collaborators, request paths, and the catalog's records kept true to the
  mount table;
- `staging`: NodeStageVolume / NodeUnstageVolume; `node_labels`: capability and SELinux label
  checks before and after a mount;
- `publishing`: NodePublishVolume / NodeUnpublishVolume;
- `node_usage`: where a volume is mounted for stats, and NodeExpandVolume;
- `mounttable`: the mount table and the one check "this volume is mounted at this path".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .backends import Backend
from .config import DriverConfig
from .locks import OperationLocks
from .metrics import Metrics
from .models import Publication, Staging, Volume
from .mounts import Mounter
from .mounttable import MountTable, ProcMountTable
from .node_context import NodeContext, PublishArgs, StageArgs
from .node_usage import NodeUsage
from .publishing import Publisher
from .selinux import SELinuxSupport
from .staging import Stager
from .state import Catalog

__all__ = ["NodeVolumes", "PublishArgs", "StageArgs"]


class NodeVolumes:
    """Mounts volumes for pods on this node."""

    def __init__(
        self,
        config: DriverConfig,
        catalog: Catalog,
        backends: Mapping[str, Backend],
        mounter: Mounter,
        locks: OperationLocks,
        probe: Callable[[], SELinuxSupport],
        metrics: Metrics,
        table: MountTable | None = None,
    ) -> None:
        self.ctx = NodeContext(
            config, catalog, backends, mounter, table or ProcMountTable(), locks, probe, metrics
        )
        self._stager = Stager(self.ctx)
        self._publisher = Publisher(self.ctx)
        self._usage = NodeUsage(self.ctx)

    @property
    def config(self) -> DriverConfig:
        return self.ctx.config

    @property
    def mounter(self) -> Mounter:
        return self.ctx.mounter

    # what the RPCs do
    def stage(self, args: StageArgs) -> None:
        self._stager.stage(args)

    def unstage(self, volume_id: str, staging_path: str, internal: bool = False) -> None:
        self._stager.unstage(volume_id, staging_path, internal)

    def publish(self, args: PublishArgs) -> None:
        self._publisher.publish(args)

    def unpublish(self, volume_id: str, target_path: str) -> None:
        self._publisher.unpublish(volume_id, target_path)

    def published_path(self, vol: Volume, volume_path: str) -> str:
        return self._usage.published_path(vol, volume_path)

    def expand(
        self,
        volume_id: str,
        volume_path: str,
        staging_path: str,
        required_bytes: int = 0,
        limit_bytes: int = 0,
    ) -> int:
        return self._usage.expand(volume_id, volume_path, staging_path, required_bytes, limit_bytes)

    # what the RPCs and reconciliation ask
    def volume(self, volume_id: str) -> Volume:
        return self.ctx.volume(volume_id)

    def known_path(self, vol: Volume, path: str, field: str) -> str:
        return self.ctx.known_path(path, field)

    def trusted(self, path: str) -> str | None:
        return self.ctx.trusted(path)

    def staging_alive(self, vol: Volume, st: Staging) -> bool:
        return self.ctx.staging_alive(vol, st)

    def carries(self, pub: Publication) -> bool:
        return self.ctx.carries(pub)

    def drop_stale_records(self, vol: Volume) -> None:
        self.ctx.drop_stale_records(vol)

    def backend_unstage(
        self, vol: Volume, backend: Backend, staging_path: str, device: str
    ) -> None:
        self.ctx.backend_unstage(vol, backend, staging_path, device)
