"""Read a file's SELinux label: the ``security.selinux`` extended attribute."""

from __future__ import annotations

import errno
import os


def read_label(path: str) -> str | None:
    """The security.selinux xattr of path itself (symlinks not followed), without its NUL.

    None when the file has no label or the filesystem or kernel has no SELinux xattrs. Other
    errors (a missing path, no permission) are raised: they mean the caller looked in the wrong
    place, not that the file is unlabelled.
    """
    try:
        raw = os.getxattr(path, "security.selinux", follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    text = raw.rstrip(b"\0").decode("utf-8", "replace")
    return text or None
