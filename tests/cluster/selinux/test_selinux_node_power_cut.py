"""The node loses power while pods write (issue 15): QEMU is killed with SIGKILL while the guest
runs (NodeVM.power_cut: no shutdown, no unmount, no sync; what the guest had only in its page
cache is lost, what QEMU had written to its disk files is kept), and the same disks boot again.

Before the cut: pods with `seLinuxOptions.level` on an ext4 and an xfs claim wrote data and
synced it, and keep appending to a file they never sync; a claim is provisioned (PV bound,
CreateVolume answered) whose pod does not exist yet; a claim is deleted right before the cut.
After the boot, what the user and the operator see: the driver starts (it does not refuse its
catalog), the node is Ready, the same pods run again with the synced data and their labels
(journal replay, then context= mounts), the waiting claim's pod starts, the deleted claim's
volume is gone, the catalog holds exactly what is mounted and exactly the volumes the API server
has PVs for; then everything is deleted and nothing is left.
"""

from __future__ import annotations

import time
from typing import Any

from tests.cluster.cluster import Cluster
from tests.cluster.kube import Kube, namespace, pvc
from tests.cluster.selinux import test_selinux_node as scenarios
from tests.cluster.selinux.node import SelinuxNode, wait
from tests.cluster.selinux.node_vm import NODE_NAME
from tests.cluster.selinux.restart_checks import (
    catalog_volumes,
    check_labelled_after_boot,
    delete_and_check_nothing_left,
    driver_state,
    node_pv_handles,
    records,
    wait_restarted,
)
from tests.cluster.selinux.test_selinux_node import app_pod, denials_for, volume_of

#: The pods writing when the power goes, one per claim of the same name.
WRITERS = ("ext4", "xfs")
#: A claim provisioned before the cut whose pod is created only after the boot.
WAITING = "waiting"
#: A claim deleted right before the cut: its DeleteVolume may be cut short.
DELETING = "deleting"
#: What a scheduler writes on a WaitForFirstConsumer claim; the csi-provisioner on that node
#: (node-deployment mode) then provisions it, with no pod needed.
SELECTED_NODE = "volume.kubernetes.io/selected-node"
#: Appends numbered lines, never synced, until the power goes.
APPEND = "i=0; while true; do i=$((i+1)); echo $i >> /data/unsynced; sleep 0.1; done"
STATE_DIR = "/var/lib/csi-hostpath-selinux"


def provisioned_claim(name: str) -> dict[str, Any]:
    claim = pvc(name, *scenarios.CLASSES["ext4"])
    claim["metadata"]["annotations"] = {SELECTED_NODE: NODE_NAME}
    return claim


def bound(kube: Kube, claim: str) -> bool:
    return kube.kubectl("get", "pvc", claim, "-o", "jsonpath={.status.phase}") == "Bound"


def unsynced(kube: Kube, pod: str) -> str:
    return kube.exec(pod, "sh", "-c", "cat /data/unsynced 2>/dev/null || true")


def mounted_csi_paths(node: SelinuxNode) -> set[str]:
    """The CSI staging and target mount points on the node."""
    return {
        fields[4]
        for fields in (line.split() for line in node.mountinfo())
        if "/volumes/kubernetes.io~csi/" in fields[4]
        or ("/plugins/kubernetes.io/csi/" in fields[4] and fields[4].endswith("/globalmount"))
    }


def test_power_cut_while_pods_write(cluster: Cluster, selinux_node: SelinuxNode) -> None:
    # The driver's state directory is on the node's root disk (ext4 with its journal, the qcow2
    # overlay QEMU keeps): a power cut treats it as it treats a node's disk.
    where = selinux_node.sh(f"findmnt -n -o SOURCE,FSTYPE,OPTIONS -T {STATE_DIR}").split()
    print(f"the state directory {STATE_DIR} is on: {where}")
    assert where[:2] == ["/dev/vda", "ext4"], where

    with namespace(cluster, "selinux-power-cut") as kube:
        objects: list[dict[str, Any]] = []
        for claim in WRITERS:
            objects += [pvc(claim, *scenarios.CLASSES[claim]), app_pod(kube, claim, claim)]
        objects += [provisioned_claim(WAITING), provisioned_claim(DELETING)]
        kube.apply(*objects)
        for pod in WRITERS:
            kube.wait_ready(pod, scenarios.POD_TIMEOUT)
        kube.wait(
            "the provisioned claims bound",
            lambda: bound(kube, WAITING) and bound(kube, DELETING),
            scenarios.POD_TIMEOUT,
        )
        volumes = {claim: volume_of(kube, claim) for claim in (*WRITERS, WAITING, DELETING)}
        uids = {pod: kube.get("pod", pod)["metadata"]["uid"] for pod in WRITERS}
        containers = {pod: selinux_node.container_id(kube.ns, pod, "app") for pod in WRITERS}

        # Data the pods made durable, then data they keep writing without a sync.
        sums = {}
        for pod in WRITERS:
            sums[pod] = kube.exec(
                pod,
                "sh",
                "-c",
                f"echo durable-{pod} > /data/f && head -c 4M /dev/urandom > /data/blob && sync"
                " && md5sum /data/blob",
            ).split()[0]
            kube.exec(pod, "sh", "-c", f"nohup sh -c '{APPEND}' </dev/null >/dev/null 2>&1 &")
        time.sleep(8)
        written = {pod: len(unsynced(kube, pod).splitlines()) for pod in WRITERS}
        assert all(written.values()), written
        print(f"unsynced lines written before the cut (at least): {written}")

        # The claim's deletion starts (the PV controller releases its PV, the node's
        # csi-provisioner calls DeleteVolume), and the power goes.
        kube.delete(f"pvc/{DELETING}", wait=False)
        t0 = time.monotonic()
        timings = selinux_node.power_cut()
        for pod in WRITERS:
            wait_restarted(selinux_node, kube, pod, containers[pod])
        timings["the writers Running again"] = time.monotonic() - t0
        print(f"power cut timings: {timings}")

        # The same pods (same UID) with their synced data. Of the unsynced lines a prefix is
        # kept, possibly followed by NUL bytes up to the file's size on disk: ext4 (data=ordered)
        # journals an append's new size without waiting for the data of a block allocated
        # before (measured: 5 of 53 lines, then NULs), which POSIX allows for data never synced.
        # Never anything else: no stale data of another file, no line out of order.
        for pod in WRITERS:
            assert kube.get("pod", pod)["metadata"]["uid"] == uids[pod]
            assert kube.exec(pod, "cat", "/data/f").strip() == f"durable-{pod}"
            assert kube.exec(pod, "md5sum", "/data/blob").split()[0] == sums[pod]
            text = unsynced(kube, pod)
            kept = text.rstrip("\0").splitlines()
            zeros = len(text) - len(text.rstrip("\0"))
            print(
                f"{pod}: {len(kept)} of at least {written[pod]} unsynced lines kept, "
                f"then {zeros} NUL bytes"
            )
            assert kept == [str(i) for i in range(1, len(kept) + 1)], kept[-5:]

        # The driver after the boot: what its start-up reconciliation did, and the labels.
        recovery = [
            line
            for line in selinux_node.driver_log().splitlines()
            if "reconciliation" in line or "refus" in line
        ]
        print(f"the driver after the boot: {recovery}")
        for pod in WRITERS:
            pv_name, volume_id = volumes[pod]
            check_labelled_after_boot(selinux_node, kube, pod, pv_name, volume_id, uids[pod])

        # The claim provisioned before the cut: its first pod starts on it after the boot.
        kube.apply(app_pod(kube, WAITING, WAITING))
        kube.wait_ready(WAITING, scenarios.POD_TIMEOUT)
        assert kube.exec(WAITING, "ls", "-A", "/data").split() in ([], ["lost+found"])
        kube.exec(WAITING, "sh", "-c", "echo first-write > /data/f && sync")
        waiting_uid = kube.get("pod", WAITING)["metadata"]["uid"]
        check_labelled_after_boot(selinux_node, kube, WAITING, *volumes[WAITING], waiting_uid)
        assert denials_for(selinux_node, scenarios.LEVEL) == []

        # The claim deleted at the cut: its volume is deleted (DeleteVolume again after the boot
        # if the cut stopped it), nothing of it on the node.
        deleted_pv, deleted_id = volumes[DELETING]
        kube.wait(
            f"the PV of claim {DELETING}, deleted at the cut, gone",
            lambda: cluster.kubectl("get", "pv", deleted_pv, check=False).returncode != 0,
            300,
        )
        files = selinux_node.sh(f"ls -A {STATE_DIR}/volumes").split()
        assert [f for f in files if deleted_id in f] == [], files

        # The catalog holds exactly what is mounted, and exactly the volumes the API server has
        # PVs for on this node: none lost, none orphaned. (Waited for: volumes of earlier
        # scenarios may still be on their way out.)
        def catalog_matches() -> bool:
            state = driver_state(selinux_node)
            paths = {s["staging_path"] for s in state["stagings"]}
            paths |= {p["target_path"] for p in state["publications"]}
            return paths == mounted_csi_paths(selinux_node) and catalog_volumes(
                state
            ) == node_pv_handles(cluster)

        def show_catalog() -> str:
            state = driver_state(selinux_node)
            return (
                f"catalog {state}\nmounted {sorted(mounted_csi_paths(selinux_node))}\n"
                f"PVs on the node {sorted(node_pv_handles(cluster))}"
            )

        wait("the catalog matching the mounts and the PVs", catalog_matches, 300, show_catalog)
        state = driver_state(selinux_node)
        print(f"catalog after the power cut: {show_catalog()}")
        ours = {volumes[c][1] for c in (*WRITERS, WAITING)}
        assert ours <= catalog_volumes(state), show_catalog()
        assert deleted_id not in catalog_volumes(state), show_catalog()
        stagings, targets = records(state, ours)
        assert len(stagings) == len(ours) and len(targets) == len(ours), (stagings, targets)

        pods = [*WRITERS, WAITING]
        delete_and_check_nothing_left(
            cluster, selinux_node, kube, pods, pods, {c: volumes[c] for c in pods}
        )
