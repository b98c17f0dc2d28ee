"""Apply a pod's fsGroup to a volume, for drivers that advertise VOLUME_MOUNT_GROUP.

With that capability kubelet hands the fsGroup to the driver (volume_mount_group) and no longer
changes ownership itself, for every volume of the driver. Kinds that can express a group as a
mount option (CIFS: gid=, forcegid) do so; for the others this module does what kubelet would:
every file gets the group and group read/write (directories also group execute and setgid, so new
files inherit the group). Symlinks are changed themselves, never followed. A volume whose root
already has the group and setgid is taken as done (kubelet's OnRootMismatch shortcut), so a
second pod with the same fsGroup costs one stat.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from .errors import InvalidArgument

log = logging.getLogger(__name__)


def parse_gid(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > 0xFFFFFFFE:
        raise InvalidArgument(f"volume_mount_group must be a numeric group id, got {text!r}")
    return int(text)


def already_applied(root: str, gid: int) -> bool:
    st = os.lstat(root)
    return st.st_gid == gid and bool(st.st_mode & stat.S_ISGID)


def apply(root: str, gid: int) -> int:
    """Give everything below root (a mount point) the group gid; return how many entries changed."""
    if already_applied(root, gid):
        return 0
    changed = 0
    root_dev = os.lstat(root).st_dev
    for dirpath, dirnames, filenames in os.walk(root, topdown=True, followlinks=False):
        # Stay on this filesystem: a mount below the volume root is not part of the volume.
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == root_dev]
        for name in [*filenames, *dirnames]:
            changed += _apply_one(os.path.join(dirpath, name), gid)
    changed += _apply_one(root, gid)  # the root last: it marks the volume as done
    log.info("applied fsGroup %d to %d entries under %s", gid, changed, root)
    return changed


def _apply_one(path: str, gid: int) -> int:
    st = os.lstat(path)
    try:
        os.chown(path, -1, gid, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EROFS):
            log.warning("cannot set group %d on %s: %s", gid, path, exc.strerror)
            return 0
        raise
    if stat.S_ISLNK(st.st_mode):
        return 1
    mode = stat.S_IMODE(st.st_mode) | stat.S_IRGRP | stat.S_IWGRP
    if stat.S_ISDIR(st.st_mode):
        mode |= stat.S_IXGRP | stat.S_ISGID
    elif st.st_mode & stat.S_IXUSR:
        mode |= stat.S_IXGRP
    os.chmod(path, mode)
    return 1
