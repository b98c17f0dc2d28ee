"""Write $CACHE/cluster.json (MODE=final) or cluster.partial.json (MODE=partial).

The harness (tests/cluster/) reads only this file. Every path in it exists when it is written;
cluster.json lists every component, the partial file only those built so far.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
from pathlib import Path


def archive_ref(archive: Path) -> str:
    """The image name a docker-archive tar carries (what `ctr images import` will call it)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        tags = json.load(member)[0]["RepoTags"]
    if len(tags) != 1:
        raise SystemExit(f"{archive}: expected one RepoTag, found {tags}")
    return str(tags[0])


def main() -> None:
    env = os.environ
    mode = env["MODE"]
    cache = Path(env["CACHE"])
    k8s_bin = Path(env["K8S_BIN"])
    images_dir = Path(env["IMAGES"])
    runc = shutil.which("runc") or "/usr/sbin/runc"
    bins = {
        **{
            name: k8s_bin / name
            for name in (
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubelet",
                "kubectl",
                "e2e.test",
                "ginkgo",
            )
        },
        "etcd": Path(env["ETCD_DIR"]) / "etcd",
        "containerd": Path(env["CONTAINERD_DIR"]) / "containerd",
        "containerd-shim-runc-v2": Path(env["CONTAINERD_DIR"]) / "containerd-shim-runc-v2",
        "ctr": Path(env["CONTAINERD_DIR"]) / "ctr",
        "runc": Path(runc),
    }
    required_bins = set(bins) - {"ginkgo"}
    logical = [
        "pause",
        "busybox",
        "driver",
        "csi-provisioner",
        "csi-snapshotter",
        "snapshot-controller",
        "node-driver-registrar",
        "livenessprobe",
        "e2e-busybox",
        "agnhost",
        "e2e-nginx",
        "e2e-glibc-dns-testing",
    ]
    images = {}
    for name in logical:
        archive = images_dir / f"{name}.tar"
        if archive.is_file():
            images[name] = {"archive": str(archive), "ref": archive_ref(archive)}
    found_bins = {k: str(v) for k, v in bins.items() if v.is_file() and os.access(v, os.X_OK)}
    cni = Path("/usr/lib/cni")
    manifest = {
        "kubernetes_version": env["K8S_VERSION"],
        "bin": found_bins,
        "cni_bin_dir": str(cni),
        "images": images,
    }
    if mode == "final":
        missing = sorted(required_bins - set(found_bins)) + sorted(set(logical) - set(images))
        if missing or not (cni / "bridge").is_file():
            raise SystemExit(f"cluster.json not written, missing: {missing}")
        target = cache / "cluster.json"
    else:
        target = cache / "cluster.partial.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(target)
    print(f"70-cluster: wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
