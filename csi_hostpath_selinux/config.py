"""The driver's configuration, as given by command-line flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3
DEFAULT_DRIVER_NAME = "hostpath-selinux.csi.k8s.io"
DEFAULT_STATE_DIR = Path("/var/lib/csi-hostpath-selinux")
DEFAULT_ENDPOINT = "unix:///csi/csi.sock"


@dataclass(frozen=True)
class DriverConfig:
    node_id: str
    state_dir: Path = DEFAULT_STATE_DIR
    driver_name: str = DEFAULT_DRIVER_NAME
    endpoint: str = DEFAULT_ENDPOINT
    kubelet_dir: str | None = None
    max_volumes_per_node: int = 1000
    max_volume_bytes: int = 1024 * GIB
    default_volume_bytes: int = GIB
    #: GetCapacity never reports more than this (0: only the free space limits it).
    max_capacity_bytes: int = 0
    #: Allocate image volumes in full at create (no overcommit of the state directory's disk).
    preallocate: bool = False
    workers: int = 16
    grace_seconds: float = 20.0
    metrics_address: str = ""

    @property
    def topology_key(self) -> str:
        return f"topology.{self.driver_name}/node"

    @property
    def catalog_path(self) -> Path:
        return self.state_dir / "catalog.sqlite"
