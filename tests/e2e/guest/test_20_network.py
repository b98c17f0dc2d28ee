"""NFS and CIFS volumes of one server, each staged with its own label."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from e2e_lib import (
    CIFS_SECRETS,
    CIFS_SOURCE,
    L1,
    L2,
    NFS_SHARE,
    Kubelet,
    context_flag,
    has_context,
    label_of,
    mounts_at,
    pod_can_create,
    pod_can_read,
    run,
    xattr_of,
)

CASES = {
    "nfs": ({"kind": "nfs", "server": "127.0.0.1", "share": NFS_SHARE}, ["nfsvers=4.2"], {}),
    "cifs": ({"kind": "cifs", "source": CIFS_SOURCE}, [], CIFS_SECRETS),
}


def smb_connections() -> list[str]:
    """Established TCP connections to Samba's port, as the kernel lists them."""
    lines = run(["ss", "-Htn", "state", "established", "dst", "127.0.0.1:445"]).splitlines()
    print(f"TCP connections to 127.0.0.1:445: {len(lines)}")
    return lines


@pytest.mark.parametrize("kind", ["nfs", "cifs"])
def test_two_volumes_of_one_server_with_two_labels(kubelet: Kubelet, kind: str) -> None:
    parameters, base_flags, secrets = CASES[kind]
    capability = kubelet.mount_capability("", base_flags)
    volumes = [kubelet.create(capability, parameters, secrets=secrets) for _ in range(2)]
    targets = []
    for volume, label in zip(volumes, (L1, L2), strict=True):
        flags = [*base_flags, context_flag(label)]
        kubelet.stage(volume, flags)
        (staged,) = mounts_at(volume.staging_path)
        assert staged.fstype.startswith(kind), f"{staged.fstype} is not {kind}"
        assert has_context(staged, label), f"context={label} missing: {staged.super_options}"
        if kind == "nfs":
            # NFS prints nosharecache in the super options; CIFS (6.1) does not print
            # nosharesock, so for CIFS the evidence is one TCP connection per mount (below).
            assert "nosharecache" in staged.super_options, f"nosharecache missing: {staged.line}"
        target = kubelet.target_for(volume)
        kubelet.publish(volume, target, flags)
        targets.append(target)

    if kind == "cifs":
        assert len(smb_connections()) >= 2, "the two CIFS mounts share one connection"

    # Both mounts live at once, each with its own label, on files written through each.
    for volume, target, label in zip(volumes, targets, (L1, L2), strict=True):
        assert label_of(volume.staging_path) == label
        assert label_of(target) == label
        probe = os.path.join(target, "written-by-pod")
        Path(probe).write_text(f"{volume.volume_id}\n")
        assert label_of(probe) == label
        assert xattr_of(probe) == label
    # Each pod reaches its own volume and not the other one, though both are on one share.
    for target, own, other in zip(targets, (L1, L2), (L2, L1), strict=True):
        probe = os.path.join(target, "written-by-pod")
        assert pod_can_read(own, probe) and pod_can_create(own, target)
        assert not pod_can_read(other, probe) and not pod_can_create(other, target)
    contents = [Path(t, "written-by-pod").read_text() for t in targets]
    assert contents[0] != contents[1], "the two volumes share one directory on the server"

    for volume, target in zip(volumes, targets, strict=True):
        kubelet.unpublish(volume, target)
        kubelet.unstage(volume)
        assert not mounts_at(target) and not mounts_at(volume.staging_path)
        kubelet.delete(volume)
