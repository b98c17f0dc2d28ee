"""ext4 and xfs image volumes staged and published with kubelet's context= flag."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from e2e_lib import (
    L1,
    L2,
    Kubelet,
    MiB,
    context_flag,
    has_context,
    label_of,
    mounts_at,
    pod_can_create,
    pod_can_read,
    refusal,
    xattr_of,
)


def assert_labelled(path: str, label: str) -> None:
    """The directory at path, and a file written through it, carry label (stat and xattr)."""
    assert label_of(path) == label
    assert xattr_of(path) == label
    probe = os.path.join(path, f"written-by-pod-{os.getpid()}")
    Path(probe).write_text("data written through the mount\n")
    assert label_of(probe) == label
    assert xattr_of(probe) == label


@pytest.mark.parametrize("fs_type", ["ext4", "xfs"])
def test_image_volume_carries_the_pod_label(kubelet: Kubelet, fs_type: str) -> None:
    # xfsprogs 6.x refuses filesystems under 300 MiB; the image file is sparse either way.
    size = 512 * MiB if fs_type == "xfs" else 64 * MiB
    volume = kubelet.create(kubelet.mount_capability(fs_type), {"kind": "image"}, size=size)
    flags = [context_flag(L1)]

    kubelet.stage(volume, flags)
    (staged,) = mounts_at(volume.staging_path)
    assert staged.fstype == fs_type
    assert has_context(staged, L1), f"context={L1} missing from {staged.super_options}"
    assert label_of(volume.staging_path) == L1

    pod_a = kubelet.target_for(volume)
    kubelet.publish(volume, pod_a, flags)
    (published,) = mounts_at(pod_a)
    assert has_context(published, L1), f"context={L1} missing from {published.super_options}"
    assert_labelled(pod_a, L1)
    # What the label is for: the pod (MCS level of L1) uses the volume, another pod cannot.
    written = os.path.join(pod_a, f"written-by-pod-{os.getpid()}")
    assert pod_can_read(L1, written) and pod_can_create(L1, pod_a)
    assert not pod_can_read(L2, written) and not pod_can_create(L2, pod_a)

    # Another pod with another label cannot share the superblock: the driver must say why.
    pod_b = kubelet.target_for(volume)
    error = refusal(lambda: kubelet.publish(volume, pod_b, [context_flag(L2)]))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert volume.volume_id in error.details
    assert L1 in error.details and L2 in error.details
    assert not mounts_at(pod_b), "the refused publish left a mount behind"

    # Another pod with the same label shares the volume.
    pod_c = kubelet.target_for(volume)
    kubelet.publish(volume, pod_c, flags)
    assert_labelled(pod_c, L1)
    assert Path(pod_c, f"written-by-pod-{os.getpid()}").exists(), "pods do not share the data"

    # A second stage at the same staging path with another label is refused, naming both.
    error = refusal(lambda: kubelet.stage(volume, [context_flag(L2)]))
    assert error.code in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION)
    assert L1 in error.details and L2 in error.details
    (still,) = mounts_at(volume.staging_path)
    assert has_context(still, L1)

    # Repeating the same stage is idempotent.
    kubelet.stage(volume, flags)
    assert len(mounts_at(volume.staging_path)) == 1

    for target in (pod_a, pod_c):
        kubelet.unpublish(volume, target)
        assert not mounts_at(target)
    kubelet.unstage(volume)
    assert not mounts_at(volume.staging_path)
    kubelet.delete(volume)
