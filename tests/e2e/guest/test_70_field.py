"""What the field hits with SELinux mounts (issue #17), under a real SELinux kernel, enforcing.

A StorageClass that sets its own context= beside the pod's, a site-default label, types other
than container_file_t, a label lost behind the driver's back (volume health), and CIFS without
credentials.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import grpc
import pytest
from e2e_lib import (
    CIFS_SOURCE,
    L1,
    L2,
    Kubelet,
    Volume,
    context_flag,
    has_context,
    label_of,
    mounts_at,
    pod_can_create,
    refusal,
    run,
)

from csi_hostpath_selinux._proto import csi_pb2 as pb

CUSTOM_TYPE = "acme_volume_file_t"  # a site's own type
SITE_DEFAULT = "system_u:object_r:container_file_t:s0"
GUEST_SOURCE = "//127.0.0.1/guest"


def policy_knows(label: str) -> bool:
    """Whether the loaded policy accepts label (security_check_context through selinuxfs)."""
    fd = os.open("/sys/fs/selinux/context", os.O_RDWR)
    try:
        os.write(fd, label.encode() + b"\0")
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        print(f"the loaded policy does not know {label}")
        return False
    finally:
        os.close(fd)
    print(f"the loaded policy knows {label}")
    return True


@pytest.fixture(scope="module")
def other_types() -> list[str]:
    """svirt_lxc_file_t (the container file type of Debian and Ubuntu nodes) and a site's own
    type, both declared by the image's policy module (image/container.cil)."""
    assert policy_knows(L1), "the probe itself works"
    types = ["svirt_lxc_file_t", CUSTOM_TYPE]
    for type_ in types:
        assert policy_knows(label(type_)), f"image/container.cil declares {type_}"
    return types


def label(type_: str, level: str = "s0:c1,c2") -> str:
    return f"system_u:object_r:{type_}:{level}"


def image_volume(kubelet: Kubelet) -> Volume:
    return kubelet.create(kubelet.mount_capability("ext4"), {"kind": "image"})


def test_storage_class_context_equal_to_the_pods_is_mounted_once(kubelet: Kubelet) -> None:
    volume = image_volume(kubelet)
    # the StorageClass wrote it unquoted; kubelet appends the pod's, quoted, after it
    flags = [f"context={L1}", context_flag(L1)]
    kubelet.stage(volume, flags)
    (staged,) = mounts_at(volume.staging_path)
    assert has_context(staged, L1)
    assert staged.super_options.count("context=") == 1
    target = kubelet.target_for(volume)
    kubelet.publish(volume, target, flags)
    assert label_of(target) == L1
    assert pod_can_create(L1, target) and not pod_can_create(L2, target)


def test_storage_class_context_other_than_the_pods_is_refused(kubelet: Kubelet) -> None:
    volume = image_volume(kubelet)
    error = refusal(lambda: kubelet.stage(volume, [f"context={L1}", context_flag(L2)]))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f'context="{L1}", given first' in error.details
    assert f'context="{L2}", given last' in error.details
    assert "seLinuxChangePolicy: Recursive" in error.details
    assert not mounts_at(volume.staging_path), "nothing mounted"


def test_site_default_label_from_the_storage_class(kubelet: Kubelet) -> None:
    """Pods without seLinuxOptions.level: only the StorageClass's label arrives. At plain s0
    every pod's category pair dominates it, so pods of any level use the volume."""
    volume = image_volume(kubelet)
    flags = [f"context={SITE_DEFAULT}"]
    kubelet.stage(volume, flags)
    (staged,) = mounts_at(volume.staging_path)
    assert has_context(staged, SITE_DEFAULT)
    target = kubelet.target_for(volume)
    kubelet.publish(volume, target, flags)
    assert label_of(target) == SITE_DEFAULT
    assert pod_can_create(L1, target) and pod_can_create(L2, target)


@pytest.mark.parametrize("index", [0, 1], ids=["svirt_lxc_file_t", "custom"])
def test_types_other_than_container_file_t(
    kubelet: Kubelet, other_types: list[str], index: int
) -> None:
    """Nothing assumes container_file_t: the volume carries the type, pods at its level use it,
    and a pod asking for container_file_t at the same level is refused naming the type."""
    type_ = other_types[index]
    mine = label(type_)
    volume = image_volume(kubelet)
    kubelet.stage(volume, [context_flag(mine)])
    target = kubelet.target_for(volume)
    kubelet.publish(volume, target, [context_flag(mine)])
    assert label_of(target) == mine
    assert pod_can_create(mine, target) and not pod_can_create(L2, target)
    other = kubelet.target_for(volume)
    error = refusal(lambda: kubelet.publish(volume, other, [context_flag(L1)]))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"seLinuxOptions.type ({type_} versus container_file_t)" in error.details
    assert "seLinuxOptions.level" not in error.details


def remount_behind_the_drivers_back(staging: str, options: list[str]) -> None:
    (entry,) = mounts_at(staging)
    device = entry.source
    run(["umount", staging])
    run(
        [
            "mount",
            "-t",
            entry.fstype,
            *(["-o", ",".join(options)] if options else []),
            device,
            staging,
        ]
    )
    mounts_at(staging)


@pytest.mark.parametrize(
    ("options", "reason"),
    [([], "SELinuxLabelLost"), ([context_flag(L2)], "SELinuxLabelChanged")],
)
def test_health_reports_a_label_lost_behind_the_drivers_back(
    kubelet: Kubelet, options: list[str], reason: str
) -> None:
    volume = image_volume(kubelet)
    kubelet.stage(volume, [context_flag(L1)])
    healthy = kubelet.driver.node.NodeGetVolumeHealth(
        pb.NodeGetVolumeHealthRequest(volume_id=volume.volume_id),
        timeout=60,
    )
    assert list(healthy.volume_health.health_statuses) == [], healthy
    remount_behind_the_drivers_back(volume.staging_path, options)
    if options:
        # why it matters: the pod is denied its own volume
        assert not pod_can_create(L1, volume.staging_path)
    node = kubelet.driver.node.NodeGetVolumeHealth(
        pb.NodeGetVolumeHealthRequest(volume_id=volume.volume_id),
        timeout=60,
    )
    controller = kubelet.driver.controller.ControllerGetVolumeHealth(
        pb.ControllerGetVolumeHealthRequest(volume_id=volume.volume_id),
        timeout=60,
    )
    for answer in (node, controller):
        print(f"volume health: {answer.volume_health}")
        errors = list(answer.volume_health.health_statuses)
        assert [(e.status, e.reason) for e in errors] == [
            (pb.VolumeHealthErrorType.INACCESSIBLE, reason)
        ]
        assert L1 in errors[0].message and "delete the pods" in errors[0].message


def test_cifs_without_credentials_is_refused_at_once(kubelet: Kubelet) -> None:
    """The field's symptom was UNAVAILABLE with mount.cifs's password prompt, retried forever."""
    started = time.monotonic()
    error = refusal(
        lambda: kubelet.create(kubelet.mount_capability(), {"kind": "cifs", "source": CIFS_SOURCE})
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "csi.storage.k8s.io/provisioner-secret-name" in error.details
    assert time.monotonic() - started < 10


def test_mount_cifs_never_waits_for_a_password(tmp_path: Path) -> None:
    """The helper itself, asked to mount without a password: it fails at once, no prompt."""
    from csi_hostpath_selinux.mount_options import MountError  # noqa: PLC0415
    from csi_hostpath_selinux.mounts import LinuxMounter  # noqa: PLC0415

    target = f"{tmp_path}/t"
    run(["mkdir", "-p", target])
    started = time.monotonic()
    with pytest.raises(MountError) as info:
        LinuxMounter(helper_timeout=60).mount_helper(CIFS_SOURCE, target, "cifs", ["username=e2e"])
    elapsed = time.monotonic() - started
    print(f"mount.cifs without a password failed in {elapsed:.1f} s: {info.value.message}")
    assert elapsed < 30, "it waited for an answer"
    assert not mounts_at(target)


def test_cifs_guest_share_needs_no_secrets(kubelet: Kubelet) -> None:
    parameters = {"kind": "cifs", "source": GUEST_SOURCE, "mountOptions": "guest"}
    volume = kubelet.create(kubelet.mount_capability(), parameters)
    flags = ["guest", context_flag(L1)]
    kubelet.stage(volume, flags)
    (staged,) = mounts_at(volume.staging_path)
    assert staged.fstype == "cifs" and has_context(staged, L1)
    target = kubelet.target_for(volume)
    kubelet.publish(volume, target, flags)
    assert pod_can_create(L1, target) and not pod_can_create(L2, target)
