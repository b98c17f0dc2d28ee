"""The component manifest the cluster build writes ($CACHE/cluster.json), as the harness reads it.

scripts/install.d/70-cluster.sh (tests/cluster/build/) builds kubelet & co, etcd, containerd, the
sidecars, the test stand-ins and the images into a cache outside the repository and writes this
file last. The harness never builds anything itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path("/var/cache/csi-hostpath-selinux/cluster")
BOOTSTRAP_HINT = (
    "the one-node cluster's components are not built: run scripts/bootstrap "
    "(scripts/install.d/70-cluster.sh builds them into {cache}, ~25 min cold)"
)

REQUIRED_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kubectl",
    "etcd",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
)
REQUIRED_IMAGES = (
    "pause",
    "busybox",
    "driver",
    "csi-provisioner",
    "node-driver-registrar",
    "livenessprobe",
)


@dataclass(frozen=True)
class Image:
    archive: Path
    ref: str


@dataclass(frozen=True)
class Components:
    kubernetes_version: str
    bin: dict[str, Path]
    cni_bin_dir: Path
    images: dict[str, Image]
    source: Path

    def binary(self, name: str) -> str:
        return str(self.bin[name])


def cache_dir() -> Path:
    return Path(os.environ.get("CSI_CLUSTER_CACHE", str(DEFAULT_CACHE)))


class ManifestMissing(RuntimeError):
    pass


def load(allow_partial: bool = False) -> Components:
    """cluster.json; with allow_partial (development only: CSI_CLUSTER_PARTIAL=1), the partial
    manifest the build writes while it is still running."""
    cache = cache_dir()
    candidates = [cache / "cluster.json"]
    if allow_partial:
        candidates.append(cache / "cluster.partial.json")
    for path in candidates:
        if path.is_file():
            break
    else:
        raise ManifestMissing(BOOTSTRAP_HINT.format(cache=cache))
    data = json.loads(path.read_text())
    components = Components(
        kubernetes_version=data["kubernetes_version"],
        bin={name: Path(p) for name, p in data["bin"].items()},
        cni_bin_dir=Path(data["cni_bin_dir"]),
        images={name: Image(Path(i["archive"]), i["ref"]) for name, i in data["images"].items()},
        source=path,
    )
    missing = [b for b in REQUIRED_BINARIES if b not in components.bin] + [
        i for i in REQUIRED_IMAGES if i not in components.images
    ]
    if missing:
        raise ManifestMissing(
            f"{path} lacks {', '.join(missing)}; " + BOOTSTRAP_HINT.format(cache=cache)
        )
    return components
