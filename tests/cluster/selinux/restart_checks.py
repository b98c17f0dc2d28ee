"""What the scenarios that restart the VM node (a reboot, a power cut) check after the boot, the
way a user and an operator see it: the pods back in new containers, their volumes labelled, the
driver's catalog (`csi-hostpath-selinux state`) holding exactly what is mounted, and nothing left
once everything is deleted."""

from __future__ import annotations

import json
from typing import Any

from tests.cluster.cluster import Cluster
from tests.cluster.deploy import DRIVER_CONTAINER, DRIVER_NAME, NAMESPACE
from tests.cluster.kube import Kube
from tests.cluster.selinux.node import SelinuxNode
from tests.cluster.selinux.node_vm import NODE_NAME
from tests.cluster.selinux.test_selinux_node import (
    LEVEL,
    POD_TIMEOUT,
    PROCESS_TYPE,
    label,
    requests,
    volume_mounts,
)


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


def node_pv_handles(cluster: Cluster) -> set[str]:
    """The volume handles of every PersistentVolume of the driver on the VM node."""
    pvs = cluster.kubectl_json("get", "pv")["items"]
    return {
        pv["spec"]["csi"]["volumeHandle"]
        for pv in pvs
        if pv["spec"].get("csi", {}).get("driver") == DRIVER_NAME
        and NODE_NAME in json.dumps(pv["spec"].get("nodeAffinity"))
    }


def catalog_volumes(state: dict[str, Any]) -> set[str]:
    """The ids of the catalog's persistent volumes (inline ephemeral volumes have no PV)."""
    return {v["id"] for v in state["volumes"] if not v["ephemeral"]}


def wait_restarted(node: SelinuxNode, kube: Kube, pod: str, container_before: str) -> None:
    """Wait for the pod's container to run and be ready again in a new container (kubelet
    restarted it after the boot)."""
    kube.wait(
        f"pod {pod} restarted after the boot",
        lambda: node.container_id(kube.ns, pod, "app") not in ("", container_before),
        POD_TIMEOUT,
        pod,
    )


def check_labelled_after_boot(
    node: SelinuxNode, kube: Kube, pod: str, pv_name: str, volume_id: str, uid: str
) -> dict[str, str]:
    """The pod's volume after the boot: NodeStage and NodePublish of the new driver got the pod's
    context=, one staging mount (globalmount) and the pod's target, both with context= in the
    node's mountinfo; `ls -Z` and the process label in the container; a new write works.
    Returns the volume's mounts (mount point -> super options)."""
    want = f'context="{label(LEVEL)}"'
    log = node.driver_log()
    stage = requests(log, "NodeStageVolume", volume_id)
    publish = requests(log, "NodePublishVolume", volume_id)
    print(f"{pod} after the boot: NodeStage {stage}, NodePublish {publish}")
    assert stage and all(flags == [want] for flags in stage), stage
    assert publish and all(flags == [want] for flags in publish), publish
    mounts = volume_mounts(node, pv_name, uid)
    print(f"{pod} mounts after the boot: {mounts}")
    assert len([p for p in mounts if p.endswith("/globalmount")]) == 1, mounts
    assert all(want in options for options in mounts.values()), mounts
    listing = kube.exec(pod, "ls", "-Zd", "/data", "/data/f")
    print(f"ls -Zd in {pod}:\n{listing}")
    assert all(line.split()[0] == label(LEVEL) for line in listing.splitlines()), listing
    process = kube.exec(pod, "cat", "/proc/1/attr/current").strip("\0\n ")
    assert process == f"system_u:system_r:{PROCESS_TYPE}:{LEVEL}", process
    kube.exec(pod, "sh", "-c", "echo after-the-boot > /data/g && sync")
    assert kube.exec(pod, "cat", "/data/g").strip() == "after-the-boot"
    return mounts


def delete_and_check_nothing_left(
    cluster: Cluster,
    node: SelinuxNode,
    kube: Kube,
    pods: list[str],
    claims: list[str],
    volumes: dict[str, tuple[str, str]],
) -> None:
    """The user deletes the pods and the claims: NodeUnstage and DeleteVolume succeed, and nothing
    of the volumes (claim -> (PV name, volume id)) is left on the node or in the catalog."""
    kube.delete(*(f"pod/{p}" for p in pods), *(f"pvc/{c}" for c in claims))
    pv_names = [pv for pv, _ in volumes.values()]
    ids = {volume_id for _, volume_id in volumes.values()}
    kube.wait(
        "the claims' volumes deleted",
        lambda: all(
            cluster.kubectl("get", "pv", pv, check=False).returncode != 0 for pv in pv_names
        ),
        300,
    )
    state = driver_state(node)
    assert records(state, ids) == (set(), set())
    assert [v["id"] for v in state["volumes"] if v["id"] in ids] == []
    left = [
        line
        for line in node.mountinfo()
        if any(pv in line for pv in pv_names) or any(volume_id in line for volume_id in ids)
    ]
    assert left == [], left
    loops = [
        line
        for line in node.sh("losetup -a").splitlines()
        if any(volume_id in line for volume_id in ids)
    ]
    assert loops == [], loops
    files = node.sh("ls -A /var/lib/csi-hostpath-selinux/volumes").split()
    assert [f for f in files if any(volume_id in f for volume_id in ids)] == [], files
