"""Deploys the driver onto the test cluster from the project's own deploy/kubernetes manifests.

The manifests are applied as shipped; the only change is the driver container's image reference
(the test build of the project's Dockerfile). The sidecars run under their upstream references: the
cluster build imports images under exactly those names. Snapshot support (CRDs and the
snapshot-controller of the pinned external-snapshotter release, as README step 2 says) is installed
when the build delivered the snapshot-controller image.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.cluster import NODE_NAME, Cluster
from tests.support.go_modules import go_module_dir

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "kubernetes"
NAMESPACE = "csi-hostpath-selinux"
DAEMONSET = "csi-hostpath-selinux-node"
DRIVER_CONTAINER = "csi-hostpath-selinux"
DRIVER_NAME = "hostpath-selinux.csi.k8s.io"
TOPOLOGY_KEY = "topology.hostpath-selinux.csi/node"
STORAGE_CLASSES = ("ext4", "xfs", "block", "directory")
SNAPSHOTTER_VERSION = "v8.7.0"
SNAPSHOTTER_MODULE = f"github.com/kubernetes-csi/external-snapshotter/v8@{SNAPSHOTTER_VERSION}"
SNAPSHOT_CLIENT_MODULE = (
    f"github.com/kubernetes-csi/external-snapshotter/client/v8@{SNAPSHOTTER_VERSION}"
)


@dataclass
class Deployment:
    snapshots: bool
    applied: list[Path]
    timings: dict[str, float]


def driver_manifests(driver_ref: str) -> list[dict[str, Any]]:
    """The objects of deploy/kubernetes/*.yaml, the driver container's image replaced."""
    objects: list[dict[str, Any]] = []
    replaced = 0
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj:
                continue
            if obj["kind"] == "DaemonSet":
                for container in obj["spec"]["template"]["spec"]["containers"]:
                    if container["name"] == DRIVER_CONTAINER:
                        container["image"] = driver_ref
                        replaced += 1
            objects.append(obj)
    if replaced != 1:
        raise RuntimeError(
            f"expected one {DRIVER_CONTAINER} container in the DaemonSet, found {replaced}"
        )
    return objects


def snapshot_support(controller_ref: str) -> list[dict[str, Any]]:
    """The snapshot CRDs and the snapshot-controller of the pinned release, the controller with
    --enable-distributed-snapshotting (README, "Optional: snapshots") and its image reference
    set to the one the build made."""
    objects: list[dict[str, Any]] = []
    crds = go_module_dir(SNAPSHOT_CLIENT_MODULE) / "config" / "crd"
    for path in sorted(crds.glob("snapshot.storage.k8s.io_*.yaml")):
        objects += [o for o in yaml.safe_load_all(path.read_text()) if o]
    controller = go_module_dir(SNAPSHOTTER_MODULE) / "deploy" / "kubernetes" / "snapshot-controller"
    for name in ("rbac-snapshot-controller.yaml", "setup-snapshot-controller.yaml"):
        for obj in yaml.safe_load_all((controller / name).read_text()):
            if not obj:
                continue
            if obj["kind"] == "Deployment":
                obj["spec"]["replicas"] = 1
                obj["spec"]["minReadySeconds"] = 0
                container = obj["spec"]["template"]["spec"]["containers"][0]
                container["image"] = controller_ref
                container["args"] = [
                    "--v=2",
                    "--leader-election=false",
                    "--enable-distributed-snapshotting",
                ]
            objects.append(obj)
    return objects


def apply(cluster: Cluster, objects: list[dict[str, Any]], name: str) -> Path:
    path = cluster.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    cluster.kubectl("apply", "--server-side", "-f", str(path))
    return path


def wait_for(
    what: str,
    check: Callable[[], object],
    timeout: float,
    on_timeout: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s\n{on_timeout()}")
        time.sleep(0.5)


def driver_registered(cluster: Cluster) -> bool:
    out = cluster.kubectl("get", "csinode", NODE_NAME, "-o", "json", check=False)
    if out.returncode != 0:
        return False
    drivers = json.loads(out.stdout)["spec"].get("drivers") or []
    return any(d["name"] == DRIVER_NAME for d in drivers)


def describe_driver_pods(cluster: Cluster) -> str:
    pods = cluster.kubectl("-n", NAMESPACE, "get", "pods", "-o", "wide", check=False).stdout
    events = cluster.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False).stdout
    return f"{pods}\n{events[-4000:]}\n{cluster.tail('kubelet', 40)}"


def deploy_driver(cluster: Cluster) -> Deployment:
    t0 = time.monotonic()
    images = cluster.components.images
    applied = [apply(cluster, driver_manifests(images["driver"].ref), "driver")]
    snapshots = "snapshot-controller" in images and "csi-snapshotter" in images
    if snapshots:
        applied.append(
            apply(cluster, snapshot_support(images["snapshot-controller"].ref), "snapshot-support")
        )
    classes = [
        o
        for kind in STORAGE_CLASSES
        for o in yaml.safe_load_all((MANIFESTS / "storageclasses" / f"{kind}.yaml").read_text())
        if o
    ]
    applied.append(apply(cluster, classes, "storageclasses"))
    if snapshots:
        wait_for(
            "the VolumeSnapshotClass CRD",
            lambda: (
                cluster.kubectl(
                    "get", "crd", "volumesnapshotclasses.snapshot.storage.k8s.io", check=False
                ).returncode
                == 0
            ),
            30,
        )
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/volumesnapshotclasses.snapshot.storage.k8s.io",
        )
        # deploy/kubernetes/snapshots/ as the README says: the class and the snapshot-controller's
        # extra RBAC.
        snapshot_objects = [
            o
            for path in sorted((MANIFESTS / "snapshots").glob("*.yaml"))
            for o in yaml.safe_load_all(path.read_text())
            if o
        ]
        applied.append(apply(cluster, snapshot_objects, "snapshots"))
    wait_for(
        "the driver registered with kubelet (CSINode)",
        lambda: driver_registered(cluster),
        120,
        lambda: describe_driver_pods(cluster),
    )
    timings = {"driver registered": time.monotonic() - t0}
    cluster.kubectl(
        "-n", NAMESPACE, "rollout", "status", f"daemonset/{DAEMONSET}", "--timeout=120s"
    )
    timings["daemonset ready"] = time.monotonic() - t0
    return Deployment(snapshots=snapshots, applied=applied, timings=timings)
