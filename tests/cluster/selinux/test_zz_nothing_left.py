"""Runs last in the package (file order): once every scenario's namespace and volume is gone, the
VM node holds no CSI mount, no loop device and no volume file."""

from __future__ import annotations

from tests.cluster.cluster import Cluster
from tests.cluster.kube import Kube
from tests.cluster.selinux.node import SelinuxNode
from tests.cluster.selinux.node_vm import NODE_NAME


def test_nothing_left_on_the_node(cluster: Cluster, selinux_node: SelinuxNode) -> None:
    """Runs last: every scenario's namespace is gone; once their volumes are deleted, the node has
    no CSI mount, no loop device and no volume file left."""

    def vm_volumes() -> list[str]:
        pvs = cluster.kubectl_json("get", "pv")["items"]
        return [
            pv["metadata"]["name"] for pv in pvs if NODE_NAME in str(pv["spec"].get("nodeAffinity"))
        ]

    kube = Kube(cluster, "default")
    kube.wait("the VM node's volumes deleted", lambda: vm_volumes() == [], 300)
    mounts = [
        line
        for line in selinux_node.mountinfo()
        if "kubernetes.io~csi" in line or "/plugins/kubernetes.io/csi/" in line
    ]
    loops = selinux_node.sh("losetup -a").strip()
    files = selinux_node.sh(
        "ls -A /var/lib/csi-hostpath-selinux/volumes 2>/dev/null || true"
    ).strip()
    print(f"CSI mounts: {mounts}\nloop devices: {loops!r}\nvolume files: {files!r}")
    assert mounts == []
    assert loops == ""
    assert files == ""
