"""Pods with SELinux labels on the enforcing VM node: what kubelet sends the driver, what the
kernel mounted, what the container sees, and what SELinux allows.

Each scenario is a user's pod with `seLinuxOptions` on a claim of the driver, scheduled to the VM
node (nodeSelector), in a namespace of its own. The container image is the driver's (a Debian
userland: coreutils' `ls -Z` prints SELinux labels, busybox's cannot), run with its own command.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.cluster.cluster import Cluster
from tests.cluster.kube import Kube, namespace, pvc
from tests.cluster.selinux.node import SelinuxNode
from tests.cluster.selinux.node_vm import NODE_NAME

LEVEL = "s0:c123,c456"
OTHER_LEVEL = "s0:c1,c2"
FILE_TYPE = "container_file_t"
PROCESS_TYPE = "container_t"
CLASSES = {"ext4": ("hostpath-selinux-ext4", "64Mi"), "xfs": ("hostpath-selinux-xfs", "320Mi")}
POD_TIMEOUT = 420


def label(level: str) -> str:
    return f"system_u:object_r:{FILE_TYPE}:{level}"


def app_pod(
    kube: Kube,
    name: str,
    claim: str,
    level: str | None = LEVEL,
    change_policy: str | None = None,
    access: str = "ReadWriteOnce",
) -> dict[str, Any]:
    security: dict[str, Any] = {}
    if level is not None:
        security["seLinuxOptions"] = {"level": level}
    if change_policy is not None:
        security["seLinuxChangePolicy"] = change_policy
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
            "terminationGracePeriodSeconds": 1,
            "securityContext": security,
            "containers": [
                {
                    "name": "app",
                    "image": kube.cluster.components.images["driver"].ref,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "100000"],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def volume_of(kube: Kube, claim: str) -> tuple[str, str]:
    pv_name = kube.get("pvc", claim)["spec"]["volumeName"]
    pv = kube.cluster.kubectl_json("get", "pv", pv_name)
    return pv_name, pv["spec"]["csi"]["volumeHandle"]


_FLAGS = re.compile(r'mount_flags: "((?:[^"\\]|\\.)*)"')


def requests(log: str, method: str, volume_id: str) -> list[list[str]]:
    """The mount_flags of every `method` request for volume_id in the driver's debug log (the
    request as the driver received it, one line each, in protobuf text format)."""
    found = []
    for line in log.splitlines():
        if f"{method} request:" in line and f'volume_id: "{volume_id}"' in line:
            found.append(
                [m.replace('\\"', '"').replace("\\\\", "\\") for m in _FLAGS.findall(line)]
            )
    return found


def volume_mounts(node: SelinuxNode, pv_name: str, pod_uid: str) -> dict[str, str]:
    """Mount point -> super options of the volume's mounts on the node: the pod's target path
    and every other mount of the same device (the staging path)."""
    lines = node.mountinfo()
    target = next(
        (
            line
            for line in lines
            if f"/pods/{pod_uid}/volumes/kubernetes.io~csi/{pv_name}/mount " in line
        ),
        None,
    )
    assert target is not None, (
        f"no mount of {pv_name} for pod {pod_uid} on the node:\n" + "\n".join(lines)
    )
    device = target.split()[2]
    found = {}
    for line in lines:
        fields = line.split()
        if fields[2] == device:
            assert fields[4] not in found, f"{fields[4]} is mounted twice:\n" + "\n".join(lines)
            found[fields[4]] = line.split(" - ", 1)[1].split()[2]
    return found


def denials_for(node: SelinuxNode, level: str) -> list[str]:
    return [d for d in node.avc_denials() if level.split(":", 1)[1] in d]


@pytest.mark.parametrize("fs", list(CLASSES))
def test_labelled_volume_end_to_end(cluster: Cluster, selinux_node: SelinuxNode, fs: str) -> None:
    storage_class, size = CLASSES[fs]
    assert selinux_node.sh("getenforce").strip() == "Enforcing"
    with namespace(cluster, f"selinux-{fs}") as kube:
        kube.apply(pvc("data", storage_class, size), app_pod(kube, "app", "data"))
        kube.wait_ready("app", POD_TIMEOUT)
        pv_name, volume_id = volume_of(kube, "data")
        uid = kube.get("pod", "app")["metadata"]["uid"]
        want = f'context="{label(LEVEL)}"'

        # What kubelet sent: the pod's label, quoted, in NodeStage and NodePublish alike.
        log = selinux_node.driver_log()
        stage, publish = (
            requests(log, m, volume_id) for m in ("NodeStageVolume", "NodePublishVolume")
        )
        print(f"NodeStageVolume mount_flags: {stage}\nNodePublishVolume mount_flags: {publish}")
        assert stage and all(flags == [want] for flags in stage), stage
        assert publish and all(flags == [want] for flags in publish), publish

        # What the kernel mounted: both the staging and the target path carry the context.
        mounts = volume_mounts(selinux_node, pv_name, uid)
        print(f"node mountinfo for {pv_name}: {mounts}")
        assert len(mounts) >= 2, mounts
        assert any(p.endswith("/globalmount") for p in mounts), mounts
        for point, options in mounts.items():
            assert want in options.split(",") or want in options, (point, options)

        # What the container sees and runs as.
        process = kube.exec("app", "cat", "/proc/1/attr/current").strip("\0\n ")
        print(f"container process label: {process}")
        assert process == f"system_u:system_r:{PROCESS_TYPE}:{LEVEL}"
        kube.exec("app", "sh", "-c", "echo written-under-enforcing > /data/f && sync")
        assert kube.exec("app", "cat", "/data/f").strip() == "written-under-enforcing"
        listing = kube.exec("app", "ls", "-Zd", "/data", "/data/f")
        print(f"ls -Zd in the container:\n{listing}")
        for line in listing.splitlines():
            assert line.split()[0] == label(LEVEL), listing
        assert fs in kube.exec("app", "sh", "-c", "grep ' /data ' /proc/mounts")

        denied = denials_for(selinux_node, LEVEL)
        assert denied == [], denied
        kube.delete("pod/app")


def test_pods_sharing_a_label_share_the_mount_rwo_and_rwop(
    cluster: Cluster, selinux_node: SelinuxNode
) -> None:
    """In 1.37 kubelet sends context= for every access mode: two pods with one level on a
    ReadWriteOnce claim share one staged, labelled mount; a ReadWriteOncePod claim gets it too."""
    storage_class, size = CLASSES["ext4"]
    with namespace(cluster, "selinux-share") as kube:
        kube.apply(
            pvc("rwo", storage_class, size),
            pvc("rwop", storage_class, size, access="ReadWriteOncePod"),
            app_pod(kube, "a", "rwo"),
            app_pod(kube, "b", "rwo"),
            app_pod(kube, "c", "rwop"),
        )
        for name in ("a", "b", "c"):
            kube.wait_ready(name, POD_TIMEOUT)
        want = f'context="{label(LEVEL)}"'
        log = selinux_node.driver_log()
        for claim, pods in (("rwo", ("a", "b")), ("rwop", ("c",))):
            pv_name, volume_id = volume_of(kube, claim)
            stage = requests(log, "NodeStageVolume", volume_id)
            publish = requests(log, "NodePublishVolume", volume_id)
            print(f"{claim}: NodeStage {stage}, NodePublish {publish}")
            assert stage and all(f == [want] for f in stage), stage
            assert len(publish) >= len(pods) and all(f == [want] for f in publish), publish
            points: dict[str, str] = {}
            for name in pods:
                points.update(
                    volume_mounts(selinux_node, pv_name, kube.get("pod", name)["metadata"]["uid"])
                )
            staging = [p for p in points if p.endswith("/globalmount")]
            assert len(staging) == 1, points
            assert len(points) == len(pods) + 1, points
            assert all(want in o for o in points.values()), points
        kube.exec("a", "sh", "-c", "echo from-a > /data/shared && sync")
        assert kube.exec("b", "cat", "/data/shared").strip() == "from-a"
        assert denials_for(selinux_node, LEVEL) == []
        kube.delete("pod/a", "pod/b", "pod/c")


def test_conflicting_level_is_held_by_kubelet(cluster: Cluster, selinux_node: SelinuxNode) -> None:
    """A second pod with another level on a volume mounted on the node: kubelet refuses it with a
    FailedMount event naming the conflict, and the driver never receives its request."""
    storage_class, size = CLASSES["ext4"]
    with namespace(cluster, "selinux-conflict") as kube:
        kube.apply(pvc("data", storage_class, size), app_pod(kube, "first", "data"))
        kube.wait_ready("first", POD_TIMEOUT)
        _, volume_id = volume_of(kube, "data")
        kube.apply(app_pod(kube, "second", "data", level=OTHER_LEVEL))
        kube.wait(
            "kubelet's FailedMount event for the conflicting label",
            lambda: "conflicting SELinux labels" in kube.events("second"),
            300,
            "second",
        )
        events = kube.events("second")
        print(events)
        assert "FailedMount" in events
        assert kube.pod_phase("second") == "Pending"
        other = f'context="{label(OTHER_LEVEL)}"'
        log = selinux_node.driver_log()
        assert all(
            other not in f
            for m in ("NodeStageVolume", "NodePublishVolume")
            for f in requests(log, m, volume_id)
        )
        kube.delete("pod/second", "pod/first")


@pytest.mark.parametrize("case", ["recursive", "no-level"])
def test_without_context_mount_the_runtime_relabels(
    cluster: Cluster, selinux_node: SelinuxNode, case: str
) -> None:
    """seLinuxChangePolicy: Recursive, or a pod with no SELinux level: kubelet sends no
    context=, the mount is unlabelled by mount options and containerd relabels the volume's files
    to the container's label instead."""
    storage_class, size = CLASSES["ext4"]
    with namespace(cluster, f"selinux-{case}") as kube:
        pod = (
            app_pod(kube, "app", "data", change_policy="Recursive")
            if case == "recursive"
            else app_pod(kube, "app", "data", level=None)
        )
        kube.apply(pvc("data", storage_class, size), pod)
        kube.wait_ready("app", POD_TIMEOUT)
        pv_name, volume_id = volume_of(kube, "data")
        log = selinux_node.driver_log()
        stage = requests(log, "NodeStageVolume", volume_id)
        publish = requests(log, "NodePublishVolume", volume_id)
        print(f"{case}: NodeStage {stage}, NodePublish {publish}")
        assert stage and all(not any("context=" in f for f in flags) for flags in stage), stage
        assert publish and all(not any("context=" in f for f in flags) for flags in publish)
        mounts = volume_mounts(selinux_node, pv_name, kube.get("pod", "app")["metadata"]["uid"])
        print(f"node mountinfo: {mounts}")
        assert all("context=" not in o for o in mounts.values()), mounts
        process = kube.exec("app", "cat", "/proc/1/attr/current").strip("\0\n ")
        level = process.split(":", 3)[3]
        print(f"process label {process}")
        if case == "recursive":
            assert level == LEVEL
        kube.exec("app", "sh", "-c", "echo relabelled > /data/f && sync")
        listing = kube.exec("app", "ls", "-Zd", "/data")
        print(f"ls -Zd /data: {listing}")
        assert listing.split()[0] == label(level), (listing, process)
        assert denials_for(selinux_node, level) == []
        kube.delete("pod/app")


def _driver_restarts(node: SelinuxNode) -> int:
    pod = node.cluster.kubectl_json("-n", "csi-hostpath-selinux", "get", "pod", node.driver_pod())
    return sum(
        s["restartCount"]
        for s in pod["status"].get("containerStatuses", [])
        if s["name"] == "csi-hostpath-selinux"
    )


def test_driver_killed_then_kubelet_restarted(cluster: Cluster, selinux_node: SelinuxNode) -> None:
    """SIGKILL of the driver while a labelled volume is in use, then a kubelet restart: the pod
    keeps its data and its label, the mounts are neither lost nor doubled, a new pod with the
    same level still gets the volume, and everything unmounts at the end (checked last)."""
    storage_class, size = CLASSES["ext4"]
    with namespace(cluster, "selinux-restart") as kube:
        kube.apply(pvc("data", storage_class, size), app_pod(kube, "app", "data"))
        kube.wait_ready("app", POD_TIMEOUT)
        pv_name, volume_id = volume_of(kube, "data")
        uid = kube.get("pod", "app")["metadata"]["uid"]
        before = volume_mounts(selinux_node, pv_name, uid)
        kube.exec("app", "sh", "-c", "echo before > /data/f && sync")

        # The driver's own process (not its sidecars); the bracket keeps the pattern from
        # matching this very shell's command line.
        pids = selinux_node.sh(
            "for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline 2>/dev/null | grep -q -- "
            "'--drivernam[e]=' && echo ${p#/proc/}; done; true"
        ).split()
        assert len(pids) == 1, pids
        restarts = _driver_restarts(selinux_node)
        selinux_node.sh(f"kill -9 {pids[0]}")
        kube.wait(
            "the driver container restarted and Ready",
            lambda: _driver_restarts(selinux_node) > restarts and selinux_node.driver_ready(),
            300,
        )
        assert volume_mounts(selinux_node, pv_name, uid) == before
        assert kube.exec("app", "cat", "/data/f").strip() == "before"

        restarted = sum("NODE-KUBELET-RESTARTED" in line for line in selinux_node.vm.console)
        selinux_node.sh("touch /run/node-restart-kubelet")
        kube.wait(
            "kubelet restarted in the guest",
            lambda: (
                sum("NODE-KUBELET-RESTARTED" in line for line in selinux_node.vm.console)
                > restarted
            ),
            120,
        )
        kube.wait("node Ready after the kubelet restart", selinux_node.node_ready, 300)
        kube.apply(app_pod(kube, "late", "data"))
        kube.wait_ready("late", POD_TIMEOUT)
        after = volume_mounts(selinux_node, pv_name, kube.get("pod", "late")["metadata"]["uid"])
        print(f"mounts before: {before}\nafter the restarts, with the late pod: {after}")
        # The old mounts are still there, once each, with their label; the late pod adds one.
        assert {p: after.get(p) for p in before} == before
        assert len(after) == len(before) + 1
        assert kube.exec("late", "cat", "/data/f").strip() == "before"
        assert kube.exec("late", "cat", "/proc/1/attr/current").strip("\0\n ").endswith(LEVEL)
        assert denials_for(selinux_node, LEVEL) == []
        kube.delete("pod/app", "pod/late", "pvc/data")
        kube.wait(
            f"PV {pv_name} deleted",
            lambda: cluster.kubectl("get", "pv", pv_name, check=False).returncode != 0,
            180,
        )
        loops = [
            line for line in selinux_node.sh("losetup -a").splitlines() if volume_id[:20] in line
        ]
        log = "\n".join(
            line
            for line in (selinux_node.driver_log()).splitlines()
            if volume_id in line and "Probe" not in line
        )
        assert loops == [], f"loop device of the deleted volume still attached: {loops}\n{log}"
