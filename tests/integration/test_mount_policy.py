"""One mount-option policy: what the stage mount carries by default, checked in the real mount table."""

from __future__ import annotations

import pytest

from csi_hostpath_selinux.mountinfo import find_mount
from tests.support.driver import Clients, DriverProcess
from tests.support.kubelet import kubelet_paths, published, stage, teardown
from tests.support.requests import create, mount_cap

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("fs_type", ["ext4", "xfs"])
def test_stage_mounts_are_nosuid_and_nodev_and_publications_inherit_it(
    csi: Clients, driver: DriverProcess, fs_type: str
) -> None:
    cap = mount_cap(fs_type, ("noatime",))
    vol, staging, target = published(csi, driver, f"policy-{fs_type}", cap, 320 << 20)
    try:
        for where in (staging, target):
            entry = find_mount(where)
            assert entry is not None
            assert {"nosuid", "nodev", "noatime"} <= set(entry.mount_options), (
                where,
                entry.mount_options,
            )
    finally:
        teardown(csi, vol.volume_id, staging, target)


def test_a_volume_whose_mount_options_say_suid_and_dev_gets_them(
    csi: Clients, driver: DriverProcess
) -> None:
    cap = mount_cap("ext4", ("suid,dev",))
    vol = csi.controller.CreateVolume(create("pvc-policy-suid", cap)).volume
    staging, _ = kubelet_paths(driver, "policy-suid")
    stage(csi, vol.volume_id, staging, cap)
    try:
        entry = find_mount(staging)
        assert entry is not None
        assert not {"nosuid", "nodev"} & set(entry.mount_options), entry.mount_options
    finally:
        teardown(csi, vol.volume_id, staging)
