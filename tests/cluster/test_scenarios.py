"""What a user of the driver sees on a real one-node cluster (SELinux off on this host).

Each scenario works through kubectl only: PVCs, pods, snapshots; it asserts on object status,
events and pod logs, and on the node's state where the user's promise is about the node (deleting
a volume leaves nothing behind)."""

from __future__ import annotations

import os
import re
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.cluster import NODE_NAME, STATE_DIR, Cluster
from tests.cluster.deploy import (
    DAEMONSET,
    DRIVER_NAME,
    NAMESPACE,
    REPO,
    TOPOLOGY_KEY,
    Deployment,
    driver_registered,
)
from tests.cluster.kube import Kube, namespace, pod, pvc

KINDS = {
    # kind: (StorageClass, size, block)
    "ext4": ("hostpath-selinux-ext4", "64Mi", False),
    "xfs": ("hostpath-selinux-xfs", "320Mi", False),
    "directory": ("hostpath-selinux-directory", "64Mi", False),
    "block": ("hostpath-selinux-block", "64Mi", True),
}


def node_traces(cluster: Cluster, volume_id: str, pv_name: str) -> list[str]:
    """What the node still holds of a volume: its image file or directory, a loop device, mounts."""
    traces = []
    state = cluster.private(STATE_DIR)
    for sub in ("volumes", "snapshots"):
        directory = state / sub
        if directory.is_dir():
            traces += [f"file {p}" for p in directory.iterdir() if p.name.startswith(volume_id)]
    traces += [
        f"loop device {d} -> {f}" for d, f in cluster.loop_devices().items() if volume_id in f
    ]
    traces += [f"mount {m}" for m in cluster.ns_mounts() if volume_id in m or pv_name in m]
    return traces


def bound_pv(kube: Kube, claim: str) -> dict[str, Any]:
    kube.wait(
        f"PVC {claim} Bound",
        lambda: kube.get("pvc", claim)["status"].get("phase") == "Bound",
        90,
        claim,
    )
    pv_name = kube.get("pvc", claim)["spec"]["volumeName"]
    return kube.cluster.kubectl_json("get", "pv", pv_name)


def write_then_read(kube: Kube, claim: str, block: bool, text: str) -> None:
    if block:
        write = f"printf '{text}' | dd of=/dev/data bs=512 count=1 conv=sync,notrunc && sync"
        read = f"dd if=/dev/data bs=1 count={len(text)} 2>/dev/null; echo"
    else:
        write = f"echo {text} > /data/file && sync && ls -ln /data"
        read = "cat /data/file"
    kube.apply(pod("writer", write, claim, block))
    kube.wait_pod("writer")
    kube.delete("pod/writer")
    kube.apply(pod("reader", read, claim, block))
    kube.wait_pod("reader")
    assert kube.logs("reader").strip() == text
    kube.delete("pod/reader")


@pytest.mark.parametrize("kind", list(KINDS))
def test_dynamic_provisioning_write_read_delete(
    cluster: Cluster, deployed: Deployment, kind: str
) -> None:
    storage_class, size, block = KINDS[kind]
    with namespace(cluster, f"prov-{kind}") as kube:
        kube.apply(pvc("data", storage_class, size, block))
        # WaitForFirstConsumer: nothing is provisioned before a pod uses the claim.
        time.sleep(1)
        assert kube.get("pvc", "data")["status"]["phase"] == "Pending"
        assert "WaitForFirstConsumer" in kube.events(
            "data"
        ) or "waiting for first consumer" in kube.events("data")
        write_then_read(kube, "data", block, f"hello-{kind}")

        pv = bound_pv(kube, "data")
        assert pv["spec"]["csi"]["driver"] == DRIVER_NAME
        expected_kind = "directory" if kind == "directory" else "image"
        assert pv["spec"]["csi"]["volumeAttributes"]["kind"] == expected_kind
        terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
        assert terms == [
            {"matchExpressions": [{"key": TOPOLOGY_KEY, "operator": "In", "values": [NODE_NAME]}]}
        ]
        if not block:
            assert pv["spec"]["csi"]["fsType"] == ("xfs" if kind == "xfs" else "ext4")
        volume_id, pv_name = pv["spec"]["csi"]["volumeHandle"], pv["metadata"]["name"]
        assert node_traces(cluster, volume_id, pv_name), "the volume exists on the node while bound"

        kube.delete("pvc/data")
        kube.wait(
            f"PV {pv_name} deleted",
            lambda: cluster.kubectl("get", "pv", pv_name, check=False).returncode != 0,
            60,
            "data",
        )
        assert node_traces(cluster, volume_id, pv_name) == []


def test_inline_ephemeral_volumes_of_the_shipped_example(
    cluster: Cluster, deployed: Deployment
) -> None:
    """deploy/examples/pod-ephemeral.yaml as shipped: a generic ephemeral volume and a CSI inline
    volume, both mounted, both gone with the pod."""
    example = yaml.safe_load((REPO / "deploy" / "examples" / "pod-ephemeral.yaml").read_text())
    example["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    example["spec"]["terminationGracePeriodSeconds"] = 1
    with namespace(cluster, "ephemeral") as kube:
        kube.apply(example)
        name = example["metadata"]["name"]
        kube.wait_ready(name)
        mounts = kube.exec(name, "cat", "/proc/mounts")
        assert " /scratch ext4 " in mounts
        assert " /inline " in mounts
        kube.exec(name, "sh", "-c", "echo x > /scratch/f && echo y > /inline/f")
        pod_obj = kube.get("pod", name)
        uid = pod_obj["metadata"]["uid"]
        claim = f"{name}-scratch"
        pv = bound_pv(kube, claim)
        inline_traces = [m for m in cluster.ns_mounts() if uid in m and "inline" in m]
        assert inline_traces, "the inline volume is mounted in the pod's directory"
        kube.delete(f"pod/{name}")
        kube.wait(
            "generic ephemeral PVC deleted with its pod",
            lambda: kube.kubectl("get", "pvc", claim, check=False) == "",
            60,
            claim,
        )
        kube.wait(
            "its PV deleted",
            lambda: (
                cluster.kubectl("get", "pv", pv["metadata"]["name"], check=False).returncode != 0
            ),
            60,
        )
        assert [m for m in cluster.ns_mounts() if uid in m] == []
        assert node_traces(cluster, pv["spec"]["csi"]["volumeHandle"], pv["metadata"]["name"]) == []


def kubelet_metrics(cluster: Cluster) -> str:
    return cluster.kubectl("get", "--raw", f"/api/v1/nodes/{NODE_NAME}/proxy/metrics").stdout


def test_volume_stats_in_kubelet_metrics(cluster: Cluster, deployed: Deployment) -> None:
    with namespace(cluster, "stats") as kube:
        kube.apply(
            pvc("data", "hostpath-selinux-ext4", "64Mi"),
            pod(
                "user",
                "dd if=/dev/zero of=/data/blob bs=1M count=20 && sync && sleep 3600",
                "data",
                restart="Always",
            ),
        )
        kube.wait_ready("user")
        labels = f'namespace="{kube.ns}",persistentvolumeclaim="data"'
        metrics = (
            "kubelet_volume_stats_used_bytes",
            "kubelet_volume_stats_capacity_bytes",
            "kubelet_volume_stats_available_bytes",
            "kubelet_volume_stats_inodes",
            "kubelet_volume_stats_inodes_used",
        )
        seen: dict[str, float] = {}

        def scrape() -> bool:
            """One scrape of kubelet's /metrics: every series of the claim, the write counted.
            (kubelet refreshes its volume stats every few seconds, not all series at once.)"""
            seen.clear()
            for line in kubelet_metrics(cluster).splitlines():
                name = line.split("{", 1)[0]
                if name in metrics and labels in line:
                    seen[name] = float(line.rsplit(" ", 1)[1])
            return len(seen) == len(metrics) and seen[metrics[0]] >= 20 * 2**20

        kube.wait("every kubelet_volume_stats series, used_bytes >= 20 MiB", scrape, 120, "user")
        assert 50 * 2**20 < seen["kubelet_volume_stats_capacity_bytes"] <= 64 * 2**20, seen
        assert seen["kubelet_volume_stats_available_bytes"] > 0, seen
        assert seen["kubelet_volume_stats_inodes"] > 0, seen
        assert seen["kubelet_volume_stats_inodes_used"] > 0, seen


def pv_gone(cluster: Cluster, name: str) -> bool:
    return cluster.kubectl("get", "pv", name, check=False).returncode != 0


def driver_pod(cluster: Cluster) -> dict[str, Any]:
    pods = cluster.kubectl_json("-n", NAMESPACE, "get", "pods")["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod = pods[0]
    assert isinstance(pod, dict), pod
    return pod


def driver_restarts(cluster: Cluster) -> int:
    statuses = driver_pod(cluster)["status"].get("containerStatuses") or []
    return sum(s["restartCount"] for s in statuses if s["name"] == "csi-hostpath-selinux")


def driver_pids(cluster: Cluster) -> list[int]:
    """The driver's own process (not its sidecars), found among the cluster's processes."""
    found = []
    for pid in cluster._cluster_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"--drivername=" in a for a in cmdline) and any(
            b"--state-dir" in a for a in cmdline
        ):
            found.append(pid)
    return found


def test_driver_killed_and_replaced_while_pods_use_volumes(
    cluster: Cluster, deployed: Deployment
) -> None:
    """kill -9 of the driver, then deletion of its pod: the pods keep their data, a new pod gets a
    new volume, and the old pods' volumes still unmount and delete cleanly."""
    with namespace(cluster, "restart") as kube:
        kube.apply(
            pvc("a", "hostpath-selinux-ext4"),
            pvc("b", "hostpath-selinux-block", block=True),
            pod("user-a", "echo before > /data/f && sleep 3600", "a", restart="Always"),
            pod(
                "user-b",
                "printf before-block | dd of=/dev/data conv=notrunc && sleep 3600",
                "b",
                block=True,
                restart="Always",
            ),
        )
        kube.wait_ready("user-a")
        kube.wait_ready("user-b")

        restarts = driver_restarts(cluster)
        pids = driver_pids(cluster)
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)
        kube.wait("the driver container restarted", lambda: driver_restarts(cluster) > restarts, 90)
        cluster.kubectl(
            "-n", NAMESPACE, "rollout", "status", f"daemonset/{DAEMONSET}", "--timeout=90s"
        )
        assert kube.exec("user-a", "cat", "/data/f").strip() == "before"
        kube.exec("user-a", "sh", "-c", "echo after-kill >> /data/f")

        old = driver_pod(cluster)["metadata"]["name"]
        cluster.kubectl("-n", NAMESPACE, "delete", "pod", old, "--wait=true")
        kube.wait("a new driver pod", lambda: driver_pod(cluster)["metadata"]["name"] != old, 60)
        cluster.kubectl(
            "-n", NAMESPACE, "rollout", "status", f"daemonset/{DAEMONSET}", "--timeout=90s"
        )
        kube.wait("driver registered again", lambda: driver_registered(cluster), 60)

        assert kube.exec("user-a", "cat", "/data/f").split() == ["before", "after-kill"]
        assert (
            kube.exec("user-b", "sh", "-c", "dd if=/dev/data bs=1 count=12 2>/dev/null")
            == "before-block"
        )
        kube.apply(pvc("c", "hostpath-selinux-ext4"), pod("user-c", "echo new > /data/f", "c"))
        kube.wait_pod("user-c")

        pvs = [bound_pv(kube, c) for c in ("a", "b", "c")]
        kube.delete("pod/user-a", "pod/user-b", "pod/user-c")
        # The old pods' volumes unmount through the replaced driver; they read back once more.
        kube.apply(pod("check-a", "cat /data/f", "a"))
        kube.wait_pod("check-a")
        assert kube.logs("check-a").split() == ["before", "after-kill"]
        kube.delete("pod/check-a", "pvc/a", "pvc/b", "pvc/c")
        for pv in pvs:
            name = pv["metadata"]["name"]
            kube.wait(f"PV {name} deleted", partial(pv_gone, cluster, name), 60)
            assert node_traces(cluster, pv["spec"]["csi"]["volumeHandle"], name) == []


def test_expansion_is_not_offered(cluster: Cluster, deployed: Deployment) -> None:
    """The deployment has no resizer (README: "Not in the deployment"); the StorageClasses say so,
    and a user editing a claim's size gets the API server's refusal, not a silent hang."""
    with namespace(cluster, "expand") as kube:
        kube.apply(pvc("data", "hostpath-selinux-ext4"), pod("user", "true", "data"))
        kube.wait_pod("user")
        out = cluster.kubectl(
            "-n",
            kube.ns,
            "patch",
            "pvc",
            "data",
            "--type=merge",
            "-p",
            '{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}',
            check=False,
        )
        assert out.returncode != 0
        assert re.search(r"storageclass that provisions the pvc must support resize", out.stderr), (
            out.stderr
        )


def test_snapshot_restore_and_clone(cluster: Cluster, deployed: Deployment) -> None:
    if not deployed.snapshots:
        pytest.fail(
            "the cluster build delivered no csi-snapshotter/snapshot-controller images: "
            "run scripts/bootstrap",
            pytrace=False,
        )
    with namespace(cluster, "snap") as kube:
        kube.apply(
            pvc("source", "hostpath-selinux-ext4"),
            pod("writer", "echo snapshot-me > /data/f && sync", "source"),
        )
        kube.wait_pod("writer")
        kube.apply(
            {
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot",
                "metadata": {"name": "snap"},
                "spec": {
                    "volumeSnapshotClassName": "hostpath-selinux-snapshots",
                    "source": {"persistentVolumeClaimName": "source"},
                },
            }
        )
        kube.wait(
            "VolumeSnapshot readyToUse",
            lambda: kube.get("volumesnapshot", "snap").get("status", {}).get("readyToUse") is True,
            90,
            "snap",
        )
        # The source changes after the snapshot: the restore must show the old content.
        kube.delete("pod/writer")
        kube.apply(pod("changer", "echo changed > /data/f", "source"))
        kube.wait_pod("changer")
        kube.delete("pod/changer")
        kube.apply(
            pvc(
                "restored",
                "hostpath-selinux-ext4",
                source={
                    "apiGroup": "snapshot.storage.k8s.io",
                    "kind": "VolumeSnapshot",
                    "name": "snap",
                },
            ),
            pvc(
                "clone",
                "hostpath-selinux-ext4",
                source={"kind": "PersistentVolumeClaim", "name": "source"},
            ),
            pod("read-restored", "cat /data/f", "restored"),
            pod("read-clone", "cat /data/f", "clone"),
        )
        kube.wait_pod("read-restored")
        kube.wait_pod("read-clone")
        assert kube.logs("read-restored").strip() == "snapshot-me"
        assert kube.logs("read-clone").strip() == "changed"
        content = kube.get("volumesnapshot", "snap")["status"]["boundVolumeSnapshotContentName"]
        kube.delete(
            "pod/read-restored",
            "pod/read-clone",
            "volumesnapshot/snap",
            "pvc/restored",
            "pvc/clone",
            "pvc/source",
        )
        kube.wait(
            "VolumeSnapshotContent deleted",
            lambda: (
                cluster.kubectl("get", "volumesnapshotcontent", content, check=False).returncode
                != 0
            ),
            60,
        )
