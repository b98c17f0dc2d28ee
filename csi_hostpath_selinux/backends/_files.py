"""Helpers the kinds share: running a tool, copying or growing a sparse file, asking for a
capability, the health of a volume held in one file, and the shape of a kind whose volume is a
bind-mounted directory (BindMountBackend).

Private to the backends package: a kind's module imports from here, never from another kind's
module, so each kind stays one file a vendor can read (and copy) on its own. A kind outside the
package takes BindMountBackend from `csi_hostpath_selinux.backends`.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from ..errors import FailedPrecondition, Internal
from ..models import HealthIssue, HealthStatus, Volume
from .base import Backend, StageRequest


def copy_sparse(source: Path, dest: Path) -> None:
    """Copy an image keeping holes (and sharing extents where the filesystem can reflink)."""
    cp = shutil.which("cp") or "/bin/cp"
    run_tool(
        [cp, "--sparse=always", "--reflink=auto", "--no-dereference", str(source), str(dest)],
        "copying the volume image",
    )


def run_tool(argv: list[str], what: str, ok_codes: tuple[int, ...] = (0,)) -> None:
    """Run a helper tool from an argv list; raise Internal with its stderr when it exits with
    a code outside ok_codes."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=600, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as exc:
        raise FailedPrecondition(
            f"{what} needs {argv[0]!r}, which is not installed in the driver's image"
        ) from exc
    if proc.returncode not in ok_codes:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise Internal(
            f"{what} failed: {argv[0]} exited {proc.returncode}: {' '.join(detail[-3:])}"
        )


def grow_file(fd: int, size: int, preallocate: bool) -> bool:
    """Grow the open file to size bytes (a hole, unless preallocate asks to allocate all of it;
    a larger file is never shrunk); return whether it grew. OSError (ENOSPC) is the caller's
    to word."""
    grown = os.fstat(fd).st_size < size
    if grown:
        os.ftruncate(fd, size)
    if preallocate:
        os.posix_fallocate(fd, 0, size)
    return grown


CAP_SYS_RESOURCE = 24


def has_sys_resource() -> bool:
    """True when this process holds CAP_SYS_RESOURCE (ext4's online resize demands it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except OSError:
        pass
    return False


def file_health(
    path: Path, volume: Volume, reason: str, what: str, advice: str
) -> list[HealthIssue]:
    """DATA_LOSS when the file that holds the volume's bytes is gone (`<reason>Missing`; a link
    or anything but a regular file in its place counts as gone, never followed) or smaller than
    the volume (`<reason>Truncated`); [] when it is whole. what names the file for the message
    ("image file"), advice ends it ("; restore it from a snapshot", or "")."""
    try:
        st: os.stat_result | None = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        return [
            HealthIssue(
                status=HealthStatus.DATA_LOSS,
                reason=f"{reason}Missing",
                message=f"the {what} {path} of the volume is gone{advice}",
            )
        ]
    if st.st_size < volume.capacity_bytes:
        return [
            HealthIssue(
                status=HealthStatus.DATA_LOSS,
                reason=f"{reason}Truncated",
                message=f"the {what} {path} is {st.st_size} bytes, smaller than the volume's "
                f"{volume.capacity_bytes} bytes: it was truncated{advice}",
            )
        ]
    return []


class BindMountBackend(Backend):
    """A kind whose volume is a directory at volume_path, bind-mounted at the staging path.

    What every such kind shares is here: a bind mount shares the host filesystem's superblock,
    so the kind cannot label (can_label is False; a subclass says why in no_label_reason);
    delete removes the directory (remove_storage, never following a link); a directory has no
    size of its own, so expansion changes only the catalog's capacity; the volume is sick when
    its directory is gone. A subclass writes create, and snapshot if it sets snapshot_suffix.
    """

    can_label: ClassVar[bool] = False

    def volume_path(self, volume_id: str) -> Path:
        """The volume's directory: always under the state directory."""
        return self.env.volumes_dir / f"{volume_id}{self.volume_suffix}"

    def delete(self, volume: Volume, secrets: Mapping[str, str]) -> None:
        self.remove_storage(volume.id)

    def stage(self, request: StageRequest) -> str:
        self.env.mounter.bind(
            str(self.volume_path(request.volume.id)),
            request.mount_target,
            read_only=request.read_only,
            extra_flags=tuple(request.flags.other),
        )
        return ""

    def unstage(self, volume: Volume, staging_path: str, device: str) -> None:
        self.env.mounter.unmount(staging_path)

    def expand(self, volume: Volume, new_bytes: int) -> bool:
        return False  # nothing on the node holds the size: the new capacity is the catalog's

    def node_expand(self, volume: Volume, device: str, mount_path: str | None) -> None:
        return

    def health(self, volume: Volume) -> list[HealthIssue]:
        path = self.volume_path(volume.id)
        if path.is_symlink() or not path.is_dir():
            return [
                HealthIssue(
                    status=HealthStatus.DATA_LOSS,
                    reason="DirectoryMissing",
                    message=f"the directory {path} of the volume is gone; restore it from a snapshot",
                )
            ]
        return []
