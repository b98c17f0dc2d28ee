"""The filesystems of image volumes: making them, and growing them to a grown image.

Private to the backends package (image.py's mkfs and resize jobs, apart from its layout).
"""

from __future__ import annotations

from pathlib import Path

from .. import loopdev
from ..errors import FailedPrecondition, Internal
from ..models import Volume
from ._files import has_sys_resource, run_tool
from .base import BackendEnv

MIB = 1024 * 1024

#: mkfs commands per filesystem: quiet, no discard (the image is sparse already), lazy init so
#: a 10 GiB filesystem is made in well under a second.
MKFS: dict[str, list[str]] = {
    "ext4": [
        "mkfs.ext4",
        "-q",
        "-F",
        "-m",
        "0",
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
    ],
    "xfs": ["mkfs.xfs", "-q", "-f", "-K"],
}

#: The smallest filesystem each mkfs accepts (xfsprogs refuses filesystems under 300 MiB).
MINIMUM_BYTES = {"ext4": 8 * MIB, "xfs": 300 * MIB, "": MIB}


def make_filesystem(fs_type: str, path: Path) -> None:
    run_tool([*MKFS[fs_type], str(path)], f"formatting the volume as {fs_type}")


def grow_copied_filesystem(env: BackendEnv, volume: Volume, path: Path) -> None:
    """A restore or clone into a larger volume: the image was grown, and its filesystem must
    fill it, or the pod sees the snapshot's size instead of the size its claim asked for.

    Done here, before the volume is ever staged, so neither path needs CAP_SYS_RESOURCE
    (ext4's online resize demands it): ext4 is checked and grown offline on the image file
    (a snapshot of a frozen, mounted filesystem needs its journal replayed first); xfs can
    only grow while mounted, so it is mounted for the moment at a private directory of the
    driver's (start-up reconciliation unmounts what a kill leaves there).
    """
    if volume.fs_type == "xfs":
        work = env.work_dir / f"grow-{volume.id}"
        work.mkdir(parents=True, mode=0o700)
        try:
            device = loopdev.attach(str(path), read_only=False).path
            try:
                # nouuid: the source of the copy may be mounted, with the same UUID.
                env.mounter.mount(device, str(work), "xfs", ["nouuid"])
                try:
                    run_tool(["xfs_growfs", "-d", str(work)], "growing the restored xfs")
                finally:
                    env.mounter.unmount(str(work))
            finally:
                loopdev.detach(device)
        finally:
            work.rmdir()
    else:
        # e2fsck exits 1 when it corrected something (a replayed journal): still a success.
        run_tool(["e2fsck", "-f", "-y", str(path)], "checking the restored ext4", ok_codes=(0, 1))
        run_tool(["resize2fs", str(path)], "growing the restored ext4 to the volume's size")


def grow_mounted_filesystem(volume: Volume, device: str, mount_path: str | None) -> None:
    """Grow the filesystem on device (a loop device that already sees the grown image)."""
    if volume.fs_type == "xfs":
        if mount_path is None:
            raise FailedPrecondition(
                f"volume {volume.id} must be mounted to grow its xfs filesystem"
            )
        run_tool(["xfs_growfs", "-d", mount_path], "growing the xfs filesystem")
    else:
        try:
            run_tool(["resize2fs", device], "growing the ext4 filesystem")
        except Internal as exc:
            if "Permission denied to resize" in exc.message and not has_sys_resource():
                raise FailedPrecondition(
                    f"growing volume {volume.id}'s ext4 filesystem while it is mounted needs "
                    "CAP_SYS_RESOURCE, which the driver's process lacks: run the driver's "
                    "container privileged"
                ) from exc
            raise
