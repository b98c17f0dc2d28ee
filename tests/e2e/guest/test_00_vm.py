"""The VM itself: SELinux enforcing, container_file_t known, context mounts work in this kernel.

These need no driver: when they fail, the VM (not the driver) is broken.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from e2e_lib import (
    L1,
    L2,
    context_flag,
    enforcing,
    label_of,
    mounts_at,
    pod_can_create,
    pod_can_read,
    run,
    xattr_of,
)


def test_selinux_is_enforcing() -> None:
    mode = run(["getenforce"]).strip()
    print(f"getenforce: {mode}")
    print(f"/sys/fs/selinux/enforce: {Path('/sys/fs/selinux/enforce').read_text().strip()}")
    policy = run(["sestatus"], check=False).strip()
    print(policy)
    assert enforcing(), f"SELinux is {mode}, the suite must run enforcing"


def test_kernel_applies_a_context_mount_in_enforcing_mode() -> None:
    """util-linux mount -o context= on a loop ext4: the fact the driver's design rests on."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        image = os.path.join(work, "fs.img")
        point = os.path.join(work, "mnt")
        os.mkdir(point)
        run(["mkfs.ext4", "-q", image, "32M"])
        run(["mount", "-o", f"loop,{context_flag(L1)}", image, point])
        try:
            Path(point, "file").write_text("x")
            assert label_of(point) == L1
            assert label_of(os.path.join(point, "file")) == L1
            assert xattr_of(os.path.join(point, "file")) == L1
            (entry,) = mounts_at(point)
            assert f'context="{L1}"' in entry.super_options
            # Enforcing mode has teeth: MCS keeps a pod with another level out.
            assert pod_can_read(L1, os.path.join(point, "file"))
            assert pod_can_create(L1, point)
            assert not pod_can_read(L2, os.path.join(point, "file"))
            assert not pod_can_create(L2, point)
        finally:
            subprocess.run(["umount", "-d", point], check=False)


NETWORK_MOUNTS = {
    "nfs": ("127.0.0.1:/srv/nfs", ["-t", "nfs"], "nfsvers=4.2,nosharecache"),
    "cifs": (
        "//127.0.0.1/share",
        ["-t", "cifs"],
        "username=e2e,password=e2e-password,nosharesock",
    ),
}


@pytest.mark.parametrize("kind", ["nfs", "cifs"])
def test_servers_serve_two_labelled_mounts(kind: str) -> None:
    """The VM's NFS server and Samba work, and one share takes two labels at once."""
    source, fstype, options = NETWORK_MOUNTS[kind]
    with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        points: list[str] = []
        try:
            for label in (L1, L2):
                point = os.path.join(work, f"mnt{len(points)}")
                os.mkdir(point)
                run(["mount", *fstype, "-o", f"{options},{context_flag(label)}", source, point])
                points.append(point)
            for point, label in zip(points, (L1, L2), strict=True):
                (entry,) = mounts_at(point)
                assert f'context="{label}"' in entry.super_options
                assert label_of(point) == label
        finally:
            for point in reversed(points):
                subprocess.run(["umount", point], check=False)
