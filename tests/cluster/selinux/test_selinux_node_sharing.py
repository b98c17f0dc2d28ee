"""Two nodes in one cluster, and the ways pods share (or may not share) a volume on the enforcing
node: after a kubelet restart, with a privileged pod, and on NFS and CIFS shares.

Like test_selinux_node.py, every scenario is a user's pods and claims in a namespace of its own;
what is asserted is what kubectl shows (phase, events, the PV's node affinity, the
CSIStorageCapacity objects) and what the node shows (mountinfo, `ls -Z`, the driver's request
log, the kernel's AVC messages).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.cluster.cluster import NODE_NAME as HOST_NODE
from tests.cluster.cluster import STATE_DIR, Cluster
from tests.cluster.deploy import NAMESPACE, TOPOLOGY_KEY
from tests.cluster.kube import Kube, namespace, pvc
from tests.cluster.selinux.node import SelinuxNode
from tests.cluster.selinux.node_vm import NODE_NAME as VM_NODE
from tests.cluster.selinux.test_selinux_node import (
    CLASSES,
    LEVEL,
    OTHER_LEVEL,
    POD_TIMEOUT,
    app_pod,
    denials_for,
    label,
    requests,
    volume_mounts,
    volume_of,
)

#: kubelet's own event when a volume is already mounted with another label.
KUBELET_CONFLICT = "conflicting SELinux labels"
#: The driver's refusal of the same (selinux.conflict_message), as a pod author reads it.
DRIVER_CONFLICT = "Pods that share a volume on one node must use the same SELinux label"


def pinned(pod: dict[str, Any], node: str | None) -> dict[str, Any]:
    """The pod scheduled to `node` by nodeSelector, or left to the scheduler (None)."""
    if node is None:
        pod["spec"].pop("nodeSelector", None)
    else:
        pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    return pod


def restart_kubelet(kube: Kube, node: SelinuxNode) -> None:
    before = sum("NODE-KUBELET-RESTARTED" in line for line in node.vm.console)
    node.sh("touch /run/node-restart-kubelet")
    kube.wait(
        "kubelet restarted in the guest",
        lambda: sum("NODE-KUBELET-RESTARTED" in line for line in node.vm.console) > before,
        120,
    )
    kube.wait("node Ready after the kubelet restart", node.node_ready, 300)


def wait_started_or_held(kube: Kube, pod: str, timeout: float = 300) -> str:
    """Waits until the pod is Ready or its events say why its volume was not mounted; returns
    the pod's events."""

    def settled() -> bool:
        if kube.pod_phase(pod) == "Running":
            return True
        events = kube.events(pod)
        return KUBELET_CONFLICT in events or DRIVER_CONFLICT in events

    kube.wait(f"pod {pod} Running or held with a label conflict", settled, timeout, pod)
    return kube.events(pod)


# --- 1. two nodes ----------------------------------------------------------------------------


def capacities(cluster: Cluster) -> list[dict[str, Any]]:
    items = cluster.kubectl_json("-n", NAMESPACE, "get", "csistoragecapacities")["items"]
    return list(items)


def test_each_claim_is_provisioned_on_its_pods_node(
    cluster: Cluster, selinux_node: SelinuxNode
) -> None:
    """Host node and VM node in one cluster: a WaitForFirstConsumer claim is created by the
    csi-provisioner of the node its pod was scheduled to, exists on that node only, and its PV's
    node affinity names that node; capacity is published per node; a later pod of the claim
    with no pin is scheduled to the claim's node."""
    storage_class, size = CLASSES["ext4"]

    # Capacity per node: one CSIStorageCapacity per (class, node segment), for both nodes.
    def segments() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for c in capacities(cluster):
            labels = (c.get("nodeTopology") or {}).get("matchLabels") or {}
            assert list(labels) == [TOPOLOGY_KEY], c
            found.setdefault(c["storageClassName"], set()).add(labels[TOPOLOGY_KEY])
        return found

    kube0 = Kube(cluster, NAMESPACE)
    kube0.wait(
        "CSIStorageCapacity for both nodes",
        lambda: segments().get(storage_class) == {HOST_NODE, VM_NODE},
        180,
    )
    per_node = {
        (c["storageClassName"], c["nodeTopology"]["matchLabels"][TOPOLOGY_KEY]): c.get("capacity")
        for c in capacities(cluster)
    }
    print(f"CSIStorageCapacity (class, node) -> capacity: {per_node}")
    for node in (HOST_NODE, VM_NODE):
        assert per_node.get((storage_class, node)), per_node
    # One object per class and node, not one per class for the whole cluster.
    keys = [
        (c["storageClassName"], c["nodeTopology"]["matchLabels"][TOPOLOGY_KEY])
        for c in capacities(cluster)
    ]
    assert len(keys) == len(set(keys)), keys

    with namespace(cluster, "selinux-two-nodes") as kube:
        kube.apply(
            pvc("on-host", storage_class, size),
            pvc("on-vm", storage_class, size),
            pinned(app_pod(kube, "host-pod", "on-host"), HOST_NODE),
            pinned(app_pod(kube, "vm-pod", "on-vm"), VM_NODE),
        )
        kube.wait_ready("host-pod", POD_TIMEOUT)
        kube.wait_ready("vm-pod", POD_TIMEOUT)

        host_files = {p.name for p in (cluster.private(STATE_DIR) / "volumes").iterdir()}
        vm_files = set(selinux_node.sh("ls -A /var/lib/csi-hostpath-selinux/volumes").split())
        placed = {}
        for claim, node in (("on-host", HOST_NODE), ("on-vm", VM_NODE)):
            pv_name, volume_id = volume_of(kube, claim)
            pv = cluster.kubectl_json("get", "pv", pv_name)
            terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
            placed[claim] = (node, terms)
            assert terms == [
                {"matchExpressions": [{"key": TOPOLOGY_KEY, "operator": "In", "values": [node]}]}
            ], terms
            on_host = any(f.startswith(volume_id) for f in host_files)
            on_vm = any(f.startswith(volume_id) for f in vm_files)
            print(f"{claim}: {volume_id} on {node}: host has it {on_host}, VM has it {on_vm}")
            assert (on_host, on_vm) == (node == HOST_NODE, node == VM_NODE)
        print(f"PV node affinity: {placed}")

        # A second pod of each claim, not pinned: the scheduler follows the volume.
        kube.apply(
            pinned(app_pod(kube, "follow-host", "on-host"), None),
            pinned(app_pod(kube, "follow-vm", "on-vm"), None),
        )
        kube.wait_ready("follow-host", POD_TIMEOUT)
        kube.wait_ready("follow-vm", POD_TIMEOUT)
        landed = {
            name: kube.get("pod", name)["spec"]["nodeName"] for name in ("follow-host", "follow-vm")
        }
        print(f"unpinned pods landed on: {landed}")
        assert landed == {"follow-host": HOST_NODE, "follow-vm": VM_NODE}
        kube.exec("vm-pod", "sh", "-c", "echo vm > /data/f && sync")
        assert kube.exec("follow-vm", "cat", "/data/f").strip() == "vm"
        kube.delete("pod/host-pod", "pod/vm-pod", "pod/follow-host", "pod/follow-vm")


# --- 2. another level after a kubelet restart -------------------------------------------------


def test_conflicting_level_after_a_kubelet_restart(
    cluster: Cluster, selinux_node: SelinuxNode
) -> None:
    """A pod with level A runs on the volume; kubelet restarts (it rebuilds its view of the
    mounted volumes from the node); then a pod with level B on the same volume and node. The
    restarted kubelet still knows the volume's mount label (it reads it back from the node's
    mountinfo when it reconstructs the volume) and holds the pod itself: the driver never gets a
    request with label B."""
    storage_class, size = CLASSES["ext4"]
    with namespace(cluster, "selinux-conflict-restart") as kube:
        kube.apply(pvc("data", storage_class, size), app_pod(kube, "first", "data"))
        kube.wait_ready("first", POD_TIMEOUT)
        _, volume_id = volume_of(kube, "data")
        restart_kubelet(kube, selinux_node)
        assert kube.pod_phase("first") == "Running"

        kube.apply(app_pod(kube, "second", "data", level=OTHER_LEVEL))
        events = wait_started_or_held(kube, "second")
        print(f"events of the pod with the other level, after the kubelet restart:\n{events}")
        other = f'context="{label(OTHER_LEVEL)}"'
        log = selinux_node.driver_log()
        reached = [
            (m, f)
            for m in ("NodeStageVolume", "NodePublishVolume")
            for f in requests(log, m, volume_id)
            if other in f
        ]
        print(f"requests with the other label that reached the driver: {reached}")
        if kube.pod_phase("second") == "Running":
            # kubelet v1.37.2's race (README): the restarted kubelet added the second pod before
            # the first pod's reconstructed volume, refused the first pod's, and unmounted it
            # under the running first pod. What the driver must still guarantee: it staged the
            # other label only after kubelet had unstaged the volume, never two labels at once.
            assert "different SELinux label" in events, events
            lines = log.splitlines()
            unstaged = [
                i
                for i, line in enumerate(lines)
                if "NodeUnstageVolume request" in line and volume_id in line
            ]
            restaged = [
                i
                for i, line in enumerate(lines)
                if "NodeStageVolume request" in line
                and volume_id in line
                and label(OTHER_LEVEL) in line
            ]
            print(
                f"kubelet let the other label through: NodeUnstage at {unstaged}, "
                f"NodeStage with it at {restaged}"
            )
            assert restaged and unstaged and unstaged[0] < restaged[0], (unstaged, restaged)
        else:
            assert kube.pod_phase("second") == "Pending"
            assert "FailedMount" in events and KUBELET_CONFLICT in events, events
            assert reached == []
            assert DRIVER_CONFLICT not in events
            assert kube.exec("first", "cat", "/proc/1/attr/current").strip("\0\n ").endswith(LEVEL)
        kube.delete("pod/second", "pod/first")


# --- 3. privileged and unprivileged pods on one volume ---------------------------------------


@pytest.mark.parametrize("privileged_level", ["none", "same"])
def test_privileged_pod_and_unprivileged_pod_on_one_volume(
    cluster: Cluster, selinux_node: SelinuxNode, privileged_level: str
) -> None:
    """The 1.37 breaking change, as the real kubelet and containerd do it. A privileged pod
    runs first on the volume, then an unprivileged pod with level s0:c123,c456 (MountOption,
    the default).

    - privileged pod without seLinuxOptions ("none"): kubelet sends no context=, the volume is
      mounted unlabelled, and the unprivileged pod is held by kubelet's label conflict (the
      KEP's "privileged and unprivileged pods cannot share a volume");
    - privileged pod with the same level ("same"): kubelet sends context= with that level for
      the privileged pod too (found here: privileged is not looked at), so both pods share the
      one labelled mount and both run.

    Either way containerd (enable_selinux = true) runs the privileged container with no
    container label at all: its processes keep the runtime's own domain (kernel_t on this
    node, whose init starts containerd), not container_t, not spc_t."""
    storage_class, size = CLASSES["ext4"]
    with namespace(cluster, f"selinux-privileged-{privileged_level}") as kube:
        level = None if privileged_level == "none" else LEVEL
        privileged = app_pod(kube, "privileged", "data", level=level)
        privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
        kube.apply(pvc("data", storage_class, size), privileged)
        kube.wait_ready("privileged", POD_TIMEOUT)
        pv_name, volume_id = volume_of(kube, "data")
        log = selinux_node.driver_log()
        stage = requests(log, "NodeStageVolume", volume_id)
        publish = requests(log, "NodePublishVolume", volume_id)
        mounts = volume_mounts(
            selinux_node, pv_name, kube.get("pod", "privileged")["metadata"]["uid"]
        )
        process = kube.exec("privileged", "cat", "/proc/1/attr/current").strip("\0\n ")
        kube.exec("privileged", "sh", "-c", "echo privileged > /data/f && sync")
        listing = kube.exec("privileged", "ls", "-Zd", "/data", "/data/f")
        print(
            f"privileged pod ({privileged_level}): NodeStage {stage}, NodePublish {publish}\n"
            f"mounts {mounts}\nprocess {process}\nls -Zd:\n{listing}"
        )
        assert process.split(":")[2] not in ("container_t", "spc_t"), process
        want = f'context="{label(LEVEL)}"'
        if level is None:
            assert stage and all(not any("context=" in f for f in fl) for fl in stage), stage
            assert publish and all(not any("context=" in f for f in fl) for fl in publish)
            assert all("context=" not in o for o in mounts.values()), mounts
        else:
            assert stage and all(fl == [want] for fl in stage), stage
            assert publish and all(fl == [want] for fl in publish), publish
            assert all(want in o for o in mounts.values()), mounts

        kube.apply(app_pod(kube, "unprivileged", "data"))
        events = wait_started_or_held(kube, "unprivileged")
        print(f"events of the unprivileged pod with level {LEVEL}:\n{events}")
        if level is None:
            assert kube.pod_phase("unprivileged") == "Pending"
            assert "FailedMount" in events and KUBELET_CONFLICT in events, events
            log = selinux_node.driver_log()
            assert all(
                want not in f
                for m in ("NodeStageVolume", "NodePublishVolume")
                for f in requests(log, m, volume_id)
            )
        else:
            kube.wait_ready("unprivileged", POD_TIMEOUT)
            shared = volume_mounts(
                selinux_node, pv_name, kube.get("pod", "unprivileged")["metadata"]["uid"]
            )
            print(f"mounts with both pods: {shared}")
            staging = [p for p in {**mounts, **shared} if p.endswith("/globalmount")]
            assert len(staging) == 1, shared
            assert kube.exec("unprivileged", "cat", "/data/f").strip() == "privileged"
            assert denials_for(selinux_node, LEVEL) == []
        assert kube.exec("privileged", "cat", "/data/f").strip() == "privileged"
        kube.delete("pod/unprivileged", "pod/privileged")


# --- 4. NFS and CIFS -------------------------------------------------------------------------

CIFS_CREDENTIALS = {"username": "e2e", "password": "e2e-password"}
NETWORK_CLASSES: dict[str, tuple[dict[str, str], list[str]]] = {
    # kind: (StorageClass parameters, mountOptions) for the servers node-init.sh starts on the
    # guest's loopback.
    "nfs": (
        {
            "kind": "nfs",
            "server": "127.0.0.1",
            "share": "/srv/nfs",
            "csi.storage.k8s.io/fstype": "nfs",
        },
        ["nfsvers=4.2"],
    ),
    "cifs": (
        {"kind": "cifs", "source": "//127.0.0.1/share", "csi.storage.k8s.io/fstype": "cifs"},
        ["vers=3.1.1"],
    ),
}


@contextmanager
def network_class(cluster: Cluster, kube: Kube, kind: str) -> Iterator[str]:
    name = f"selinux-node-{kind}-{kube.ns[-6:]}"
    parameters, options = NETWORK_CLASSES[kind]
    parameters = {**parameters, "onDelete": "delete"}
    if kind == "cifs":
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "cifs-creds"},
                "type": "Opaque",
                "stringData": CIFS_CREDENTIALS,
            }
        )
        for step in ("provisioner", "node-stage"):
            parameters[f"csi.storage.k8s.io/{step}-secret-name"] = "cifs-creds"
            parameters[f"csi.storage.k8s.io/{step}-secret-namespace"] = kube.ns
    sc = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "hostpath-selinux.csi.k8s.io",
        "parameters": parameters,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "mountOptions": options,
    }
    kube.apply(sc)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "storageclass", name, "--ignore-not-found", check=False)


@pytest.mark.parametrize("kind", list(NETWORK_CLASSES))
def test_network_share_two_pods_two_labels(
    cluster: Cluster, selinux_node: SelinuxNode, kind: str
) -> None:
    """Two volumes of one NFS export (or SMB share), one pod each with different levels on the
    enforcing node: each volume is its own context= mount (NFS: nosharecache in the super
    options; CIFS: its own TCP connection, as nosharesock makes it, since the kernel does not
    print nosharesock), both pods read and write, no AVC denial."""
    levels = {"a": LEVEL, "b": OTHER_LEVEL}
    with namespace(cluster, f"selinux-{kind}") as kube, network_class(cluster, kube, kind) as sc:
        kube.apply(
            *(pvc(f"data-{p}", sc, "64Mi") for p in levels),
            *(app_pod(kube, p, f"data-{p}", level=lvl) for p, lvl in levels.items()),
        )
        for p in levels:
            kube.wait_ready(p, POD_TIMEOUT)
        log = selinux_node.driver_log()
        supers = {}
        for p, lvl in levels.items():
            pv_name, volume_id = volume_of(kube, f"data-{p}")
            want = f'context="{label(lvl)}"'
            stage = requests(log, "NodeStageVolume", volume_id)
            print(f"{kind} pod {p}: NodeStage mount_flags {stage}")
            assert stage and all(want in f for f in stage), stage
            mounts = volume_mounts(selinux_node, pv_name, kube.get("pod", p)["metadata"]["uid"])
            print(f"{kind} pod {p}: mounts {mounts}")
            assert mounts and all(want in o for o in mounts.values()), mounts
            if kind == "nfs":
                assert all("nosharecache" in o.split(",") for o in mounts.values()), mounts
            supers[p] = mounts
            kube.exec(p, "sh", "-c", f"echo {kind}-{p} > /data/f && sync")
            assert kube.exec(p, "cat", "/data/f").strip() == f"{kind}-{p}"
            listing = kube.exec(p, "ls", "-Zd", "/data", "/data/f")
            print(f"ls -Zd in pod {p}:\n{listing}")
            assert all(line.split()[0] == label(lvl) for line in listing.splitlines()), listing
        # Two superblocks, one per label, not one shared.
        assert not set(supers["a"]) & set(supers["b"])
        mountinfo = "\n".join(selinux_node.mountinfo())
        fstype = "nfs4" if kind == "nfs" else "cifs"
        assert mountinfo.count(f" - {fstype} ") >= 4, mountinfo
        if kind == "cifs":
            connections = selinux_node.sh(
                "ss -Htn state established dst 127.0.0.1:445"
            ).splitlines()
            print(f"TCP connections to 127.0.0.1:445 on the node: {connections}")
            assert len(connections) >= 2, connections
        for lvl in levels.values():
            assert denials_for(selinux_node, lvl) == []
        kube.delete("pod/a", "pod/b", "pvc/data-a", "pvc/data-b")
        kube.wait(
            "the share's volumes deleted",
            lambda: (
                not [
                    pv
                    for pv in cluster.kubectl_json("get", "pv")["items"]
                    if pv["spec"].get("storageClassName") == sc
                ]
            ),
            180,
        )
