"""Rules of the CSI spec that csi-sanity does not check, against the real driver."""

from __future__ import annotations

import pytest

from csi_hostpath_selinux._proto import csi_pb2 as pb
from tests.support.driver import Clients, DriverProcess
from tests.support.kubelet import published, teardown
from tests.support.requests import mount_cap

pytestmark = pytest.mark.integration

_RPC = pb.ControllerServiceCapability.RPC


def controller_capabilities(csi: Clients) -> set[int]:
    response = csi.controller.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
    return {c.rpc.type for c in response.capabilities}


def test_published_nodes_capability_only_with_publish_unpublish(csi: Clients) -> None:
    """The spec allows LIST_VOLUMES_PUBLISHED_NODES only together with PUBLISH_UNPUBLISH_VOLUME."""
    caps = controller_capabilities(csi)
    if _RPC.LIST_VOLUMES_PUBLISHED_NODES in caps:
        assert _RPC.PUBLISH_UNPUBLISH_VOLUME in caps
    assert _RPC.PUBLISH_UNPUBLISH_VOLUME not in caps, "attachRequired: false, no attach step"


def test_a_node_publication_is_not_reported_as_a_controller_publication(
    csi: Clients, driver: DriverProcess
) -> None:
    """published_node_ids lists ControllerPublishVolume's nodes; this driver never attaches."""
    cap = mount_cap("ext4")
    vol, staging, target = published(csi, driver, "published", cap)
    try:
        listed = csi.controller.ListVolumes(pb.ListVolumesRequest()).entries
        assert [e.volume.volume_id for e in listed] == [vol.volume_id]
        assert list(listed[0].status.published_node_ids) == []
        got = csi.controller.ControllerGetVolume(
            pb.ControllerGetVolumeRequest(volume_id=vol.volume_id)
        )
        assert got.HasField("status"), "the spec says status is required"
        assert list(got.status.published_node_ids) == []
    finally:
        teardown(csi, vol.volume_id, staging, target)
