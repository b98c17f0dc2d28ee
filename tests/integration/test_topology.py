"""The driver's topology over gRPC: a key kubelet may set, and the pre-fix key still honoured."""

from __future__ import annotations

import grpc
import pytest

from csi_hostpath_selinux._proto import csi_pb2 as pb
from tests.support.driver import Clients
from tests.support.requests import MIB, create, mount_cap

pytestmark = pytest.mark.integration

NEW_KEY = "topology.hostpath-selinux.csi/node"
OLD_KEY = "topology.hostpath-selinux.csi.k8s.io/node"


def kubelet_may_not_set(key: str) -> bool:
    """NodeRestriction's rule for node labels, written out independently of the driver's."""
    prefix = key.split("/", maxsplit=1)[0] if "/" in key else ""
    return any(prefix == d or prefix.endswith("." + d) for d in ("k8s.io", "kubernetes.io"))


def with_topology(name: str, *segments: dict[str, str]) -> pb.CreateVolumeRequest:
    req = create(name, mount_cap("ext4"), 16 * MIB)
    for segment in segments:
        req.accessibility_requirements.requisite.add().segments.update(segment)
        req.accessibility_requirements.preferred.add().segments.update(segment)
    return req


def test_node_reports_a_topology_key_kubelet_may_set(csi: Clients) -> None:
    info = csi.node.NodeGetInfo(pb.NodeGetInfoRequest())
    segments = dict(info.accessible_topology.segments)
    assert segments == {NEW_KEY: "test-node"}
    assert not any(kubelet_may_not_set(k) for k in segments)


def test_create_volume_honours_the_new_and_the_old_key(csi: Clients) -> None:
    """external-provisioner builds requisite/preferred from CSINode's keys: the new key after
    the fix, the old key in requests about volumes provisioned before it (e.g. a clone source)."""
    ids = []
    for name, segment in [("pvc-new", {NEW_KEY: "test-node"}), ("pvc-old", {OLD_KEY: "test-node"})]:
        vol = csi.controller.CreateVolume(
            with_topology(name, {NEW_KEY: "elsewhere"}, segment)
        ).volume
        assert [dict(t.segments) for t in vol.accessible_topology] == [{NEW_KEY: "test-node"}]
        ids.append(vol.volume_id)
    for segment in ({NEW_KEY: "elsewhere"}, {OLD_KEY: "elsewhere"}):
        with pytest.raises(grpc.RpcError) as info:
            csi.controller.CreateVolume(with_topology("pvc-far", segment))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"{NEW_KEY}=test-node" in (info.value.details() or "")
    for vol_id in ids:
        csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol_id))


@pytest.mark.parametrize(
    ("segment", "has_capacity"),
    [
        ({NEW_KEY: "test-node"}, True),
        ({OLD_KEY: "test-node"}, True),
        ({NEW_KEY: "elsewhere"}, False),
        ({OLD_KEY: "elsewhere"}, False),
        ({NEW_KEY: "test-node", OLD_KEY: "elsewhere"}, False),
    ],
)
def test_get_capacity_per_segment(
    csi: Clients, segment: dict[str, str], has_capacity: bool
) -> None:
    req = pb.GetCapacityRequest(accessible_topology=pb.Topology(segments=segment))
    assert (csi.controller.GetCapacity(req).available_capacity > 0) is has_capacity
