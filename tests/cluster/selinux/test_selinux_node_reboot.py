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

from typing import Any

from tests.cluster.cluster import Cluster
from tests.cluster.kube import namespace, pvc
from tests.cluster.selinux.node import SelinuxNode
from tests.cluster.selinux.restart_checks import (
    check_labelled_after_boot,
    delete_and_check_nothing_left,
    driver_state,
    records,
    wait_restarted,
)
from tests.cluster.selinux.test_selinux_node import (
    CLASSES,
    LEVEL,
    POD_TIMEOUT,
    app_pod,
    denials_for,
    label,
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


def test_node_reboot_pods_come_back_with_data_and_labels(
    cluster: Cluster, selinux_node: SelinuxNode
) -> None:
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
        for claim in CLAIMS:
            wait_restarted(selinux_node, kube, claim, containers[claim])
            assert kube.get("pod", claim)["metadata"]["uid"] == uids[claim]
            assert kube.exec(claim, "cat", "/data/f").strip() == f"before-the-reboot-{claim}"
        kube.wait(
            f"pod {GONE}, deleted while the node was down, gone",
            lambda: kube.kubectl("get", "pod", GONE, check=False).strip() == "",
            POD_TIMEOUT,
            GONE,
        )

        # The labels: what kubelet sent the new driver, what the kernel mounted, what the
        # container sees and runs as; the same mount points as before, one staging mount per
        # volume, no doubles.
        recovery = [
            line
            for line in selinux_node.driver_log().splitlines()
            if "start-up reconciliation" in line
        ]
        print(f"the driver after the boot: {recovery}")
        for claim in CLAIMS:
            pv_name, volume_id = volumes[claim]
            mounts = check_labelled_after_boot(
                selinux_node, kube, claim, pv_name, volume_id, uids[claim]
            )
            assert sorted(mounts) == sorted(mounts_before[claim]), (mounts_before[claim], mounts)
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
        delete_and_check_nothing_left(cluster, selinux_node, kube, list(CLAIMS), pods, volumes)
