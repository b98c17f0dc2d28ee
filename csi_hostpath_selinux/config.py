"""The driver's configuration, as given by command-line flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3
DEFAULT_DRIVER_NAME = "hostpath-selinux.csi.k8s.io"
DEFAULT_STATE_DIR = Path("/var/lib/csi-hostpath-selinux")
DEFAULT_ENDPOINT = "unix:///csi/csi.sock"

#: The catalog's file name in the state directory.
CATALOG_NAME = "catalog.sqlite"


#: Label namespaces kubelet may not set on its own Node object when the NodeRestriction admission
#: plugin is on (kubeadm, kind and managed clusters enable it): `kubernetes.io`, `k8s.io` and
#: their subdomains. A topology key there keeps the driver from ever registering on the node.
KUBELET_FORBIDDEN_LABEL_DOMAINS = ("kubernetes.io", "k8s.io")


def in_kubelet_forbidden_namespace(label_key: str) -> bool:
    """Whether NodeRestriction refuses this node label key from a kubelet (exceptions such as
    kubernetes.io/hostname and node.kubernetes.io/* do not matter for CSI topology keys)."""
    prefix = label_key.partition("/")[0] if "/" in label_key else ""
    return any(prefix == d or prefix.endswith("." + d) for d in KUBELET_FORBIDDEN_LABEL_DOMAINS)


def topology_key_for(driver_name: str) -> str:
    """`topology.<driver name>/node`, with a `.k8s.io` or `.kubernetes.io` suffix of the name
    dropped: `hostpath-selinux.csi.k8s.io` gives `topology.hostpath-selinux.csi/node`."""
    base = driver_name
    for domain in KUBELET_FORBIDDEN_LABEL_DOMAINS:
        if base == domain or base.endswith("." + domain):
            base = base[: -len(domain)].rstrip(".")
            break
    return f"topology.{base or 'csi'}/node"


def legacy_topology_key_for(driver_name: str) -> str:
    """The key releases before the fix used: `topology.<driver name>/node`, whatever the name.
    Volumes provisioned then carry it in their PV's node affinity; requests naming it are honoured."""
    return f"topology.{driver_name}/node"


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
        """The node label key of this driver's topology segment (see `topology_key_for`)."""
        return topology_key_for(self.driver_name)

    @property
    def legacy_topology_keys(self) -> tuple[str, ...]:
        """Keys earlier releases used, still understood in requests (see `legacy_topology_key_for`)."""
        legacy = legacy_topology_key_for(self.driver_name)
        return () if legacy == self.topology_key else (legacy,)

    @property
    def known_topology_keys(self) -> tuple[str, ...]:
        return (self.topology_key, *self.legacy_topology_keys)

    @property
    def catalog_path(self) -> Path:
        return self.state_dir / CATALOG_NAME
