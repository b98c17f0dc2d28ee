"""The node rebooted while pods used labelled volumes (issue 15: "the VM restarted with its disks
kept"): after the boot the same pods run again with their data and their SELinux labels, the
driver's catalog holds exactly what is mounted, and a pod deleted while the node was down leaves
nothing behind.

The reboot is a shutdown as a node makes it (guest/node-init.sh, /run/node-reboot: kubelet and
containerd stopped, every process killed, the mounts under kubelet's directory undone, loop
devices detached, disks synced), then the same root, payload and results disks boot again
(node_vm.py). Nobody tells the driver: it is killed with the rest, and its new container finds a
catalog whose stagings and publications have no mounts any more.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.cluster.cluster import Cluster
from tests.cluster.deploy import DRIVER_CONTAINER, NAMESPACE
from tests.cluster.kube import namespace, pvc
from tests.cluster.selinux.node import SelinuxNode
from tests.cluster.selinux.test_selinux_node import (
    CLASSES,
    LEVEL,
    POD_TIMEOUT,
    PROCESS_TYPE,
    app_pod,
    denials_for,
    label,
    requests,
    volume_mounts,
    volume_of,
)

#: claim -> (storage class, size, access mode); each has one pod of the same name.
CLAIMS = {
    "ext4": (*CLASSES["ext4"], "ReadWriteOnce"),
    "xfs": (*CLASSES["xfs"], "ReadWriteOnce"),
    "rwop": (*CLASSES["ext4"], "ReadWriteOncePod"),
}
#: A pod deleted while the node is down: kubelet never stages its volume again.
GONE = "gone"


def driver_state(node: SelinuxNode) -> dict[str, Any]:
    """The driver's catalog as an operator reads it: `csi-hostpath-selinux state` (read-only)
    in the driver container."""
    out = node.cluster.kubectl(
        "-n",
        NAMESPACE,
        "exec",
        node.driver_pod(),
        "-c",
        DRIVER_CONTAINER,
        "--",
        "csi-hostpath-selinux",
        "state",
        timeout=60,
    ).stdout
    state: dict[str, Any] = json.loads(out)
    return state


def records(state: dict[str, Any], volume_ids: set[str]) -> tuple[set[str], set[str]]:
    """The staging paths and target paths the catalog holds for these volumes."""
    stagings = {s["staging_path"] for s in state["stagings"] if s["volume_id"] in volume_ids}
    targets = {p["target_path"] for p in state["publications"] if p["volume_id"] in volume_ids}
    return stagings, targets


def test_node_reboot_pods_come_back_with_data_and_labels(
    cluster: Cluster, selinux_node: SelinuxNode
) -> None:
    want = f'context="{label(LEVEL)}"'
    with namespace(cluster, "selinux-reboot") as kube:
        objects: list[dict[str, Any]] = []
        for claim, (storage_class, size, access) in CLAIMS.items():
            objects += [
                pvc(claim, storage_class, size, access=access),
                app_pod(kube, claim, claim, access=access),
            ]
        objects += [pvc(GONE, *CLASSES["ext4"]), app_pod(kube, GONE, GONE)]
        kube.apply(*objects)
        pods = [*CLAIMS, GONE]
        for pod in pods:
            kube.wait_ready(pod, POD_TIMEOUT)
        volumes = {claim: volume_of(kube, claim) for claim in pods}
        uids = {pod: kube.get("pod", pod)["metadata"]["uid"] for pod in pods}
        containers = {pod: selinux_node.container_id(kube.ns, pod, "app") for pod in pods}
        for claim in pods:
            kube.exec(claim, "sh", "-c", f"echo before-the-reboot-{claim} > /data/f && sync")
        mounts_before = {
            claim: volume_mounts(selinux_node, volumes[claim][0], uids[claim]) for claim in pods
        }
        print(f"mounts before the reboot: {mounts_before}")
        ids = {volume_id for _, volume_id in volumes.values()}
        stagings, targets = records(driver_state(selinux_node), ids)
        assert len(stagings) == len(pods) and len(targets) == len(pods), (stagings, targets)

        def delete_gone_pod() -> None:
            # While the machine is off: the pod is deleted (it stays Terminating until the
            # node's kubelet confirms), so after the boot kubelet tears its volume down instead
            # of staging it again.
            kube.delete(f"pod/{GONE}", wait=False)

        timings = selinux_node.reboot(while_down=delete_gone_pod)
        print(f"reboot timings: {timings}")

        # The same pods (same UID) run again, restarted by kubelet, with their data.
        def restarted(pod: str) -> Callable[[], bool]:
            """The pod's container runs and is ready again, a new one (kubelet restarted it)."""
            return lambda: (
                selinux_node.container_id(kube.ns, pod, "app")
                not in (
                    "",
                    containers[pod],
                )
            )

        for claim in CLAIMS:
            kube.wait(
                f"pod {claim} restarted after the reboot", restarted(claim), POD_TIMEOUT, claim
            )
            assert kube.get("pod", claim)["metadata"]["uid"] == uids[claim]
            assert kube.exec(claim, "cat", "/data/f").strip() == f"before-the-reboot-{claim}"
        kube.wait(
            f"pod {GONE}, deleted while the node was down, gone",
            lambda: kube.kubectl("get", "pod", GONE, check=False).strip() == "",
            POD_TIMEOUT,
            GONE,
        )

        # The labels: what kubelet sent the new driver, what the kernel mounted, what the
        # container sees and runs as; one staging mount per volume, no doubles.
        log = selinux_node.driver_log()
        recovery = [line for line in log.splitlines() if "start-up reconciliation" in line]
        print(f"the driver after the boot: {recovery}")
        for claim in CLAIMS:
            pv_name, volume_id = volumes[claim]
            stage = requests(log, "NodeStageVolume", volume_id)
            publish = requests(log, "NodePublishVolume", volume_id)
            print(f"{claim} after the boot: NodeStage {stage}, NodePublish {publish}")
            assert stage and all(flags == [want] for flags in stage), stage
            assert publish and all(flags == [want] for flags in publish), publish
            mounts = volume_mounts(selinux_node, pv_name, uids[claim])
            print(f"{claim} mounts after the boot: {mounts}")
            assert sorted(mounts) == sorted(mounts_before[claim]), (mounts_before[claim], mounts)
            assert len([p for p in mounts if p.endswith("/globalmount")]) == 1, mounts
            assert all(want in options for options in mounts.values()), mounts
            listing = kube.exec(claim, "ls", "-Zd", "/data", "/data/f")
            print(f"ls -Zd in {claim}:\n{listing}")
            assert all(line.split()[0] == label(LEVEL) for line in listing.splitlines()), listing
            process = kube.exec(claim, "cat", "/proc/1/attr/current").strip("\0\n ")
            assert process == f"system_u:system_r:{PROCESS_TYPE}:{LEVEL}", process
            kube.exec(claim, "sh", "-c", "echo after-the-reboot > /data/g && sync")
            assert kube.exec(claim, "cat", "/data/g").strip() == "after-the-reboot"
        assert denials_for(selinux_node, LEVEL) == []

        # The catalog holds exactly what is mounted: the three pods' stagings and publications,
        # with their label; nothing of the deleted pod's volume, nothing of the old boot.
        state = driver_state(selinux_node)
        mountpoints = {line.split()[4] for line in selinux_node.mountinfo()}
        stagings, targets = records(state, ids)
        print(
            f"catalog after the boot: stagings {sorted(stagings)}, publications {sorted(targets)}"
        )
        expected_targets = {
            p for claim in CLAIMS for p in mounts_before[claim] if not p.endswith("/globalmount")
        }
        expected_stagings = {
            p for claim in CLAIMS for p in mounts_before[claim] if p.endswith("/globalmount")
        }
        assert targets == expected_targets
        assert stagings == expected_stagings
        assert stagings | targets <= mountpoints
        labels = {r["label"] for r in state["stagings"] + state["publications"]}
        assert labels <= {label(LEVEL)}, labels
        gone_mounts = [line for line in selinux_node.mountinfo() if volumes[GONE][0] in line]
        assert gone_mounts == [], gone_mounts

        # Then the user deletes everything: NodeUnstage and DeleteVolume succeed, nothing is
        # left of the volumes on the node or in the catalog.
        kube.delete(*(f"pod/{c}" for c in CLAIMS), *(f"pvc/{c}" for c in pods))
        pv_names = [pv for pv, _ in volumes.values()]
        kube.wait(
            "the claims' volumes deleted",
            lambda: all(
                cluster.kubectl("get", "pv", pv, check=False).returncode != 0 for pv in pv_names
            ),
            300,
        )
        state = driver_state(selinux_node)
        assert records(state, ids) == (set(), set())
        assert [v["id"] for v in state["volumes"] if v["id"] in ids] == []
        left = [
            line
            for line in selinux_node.mountinfo()
            if any(pv in line for pv in pv_names) or any(volume_id in line for volume_id in ids)
        ]
        assert left == [], left
        loops = [
            line
            for line in selinux_node.sh("losetup -a").splitlines()
            if any(volume_id in line for volume_id in ids)
        ]
        assert loops == [], loops
        files = selinux_node.sh("ls -A /var/lib/csi-hostpath-selinux/volumes").split()
        assert [f for f in files if any(volume_id in f for volume_id in ids)] == [], files
