"""Directory volumes are bind mounts of a shared filesystem: they cannot carry a label."""

from __future__ import annotations

import grpc
from e2e_lib import L1, Kubelet, context_flag, label_of, mounts_at, refusal


def test_directory_volume_with_a_context_is_refused_with_a_reason(kubelet: Kubelet) -> None:
    volume = kubelet.create(kubelet.mount_capability(), {"kind": "directory"})
    error = refusal(lambda: kubelet.stage(volume, [context_flag(L1)]))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    details = error.details
    assert volume.volume_id in details or L1 in details or "context" in details
    assert "bind" in details.lower(), f"the message does not explain the bind mount: {details}"
    assert not mounts_at(volume.staging_path)


def test_directory_volume_without_a_context_is_published(kubelet: Kubelet) -> None:
    volume = kubelet.create(kubelet.mount_capability(), {"kind": "directory"})
    kubelet.stage(volume)
    target = kubelet.target_for(volume)
    kubelet.publish(volume, target)
    (entry,) = mounts_at(target)
    assert "context=" not in entry.super_options
    label_of(target)  # printed for the log: whatever the host directory carries
    kubelet.unpublish(volume, target)
    kubelet.unstage(volume)
    kubelet.delete(volume)
