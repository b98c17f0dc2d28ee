"""The node probe: what this node's kernel, and this process's view of it, say about SELinux.

util-linux's mount helpers drop SELinux options without an error unless libselinux reports SELinux
enabled, which needs a read-write selinuxfs at /sys/fs/selinux and an /etc/selinux/config; the
probe finds out whether they would, and ``SELinuxSupport`` says so in words for a bug report.
A probe never raises: a file that cannot be read counts as absent.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .mountinfo import parse_mountinfo_line
from .xattr import read_label

# A security context as /proc/<pid>/attr/current shows it under SELinux (AppArmor and Smack show
# profile or label names without colons).
_CONTEXT_SHAPE = re.compile(
    r"[A-Za-z][A-Za-z0-9_.-]*:[A-Za-z][A-Za-z0-9_.-]*:[A-Za-z][A-Za-z0-9_.-]*(?::[A-Za-z0-9:,.-]+)?"
)


@dataclass(frozen=True)
class SELinuxSupport:
    """What this node and this driver's view of it say about SELinux."""

    kernel_enabled: bool
    selinuxfs_mounted: bool
    selinuxfs_writable: bool
    config_present: bool
    enforcing: bool | None
    # Which signal decided kernel_enabled, for describe() and bug reports.
    evidence: str = ""

    @property
    def util_linux_keeps_options(self) -> bool:
        """libmount keeps SELinux options only when libselinux reports SELinux enabled, which
        needs a read-write selinuxfs at /sys/fs/selinux and an /etc/selinux/config."""
        return self.selinuxfs_mounted and self.selinuxfs_writable and self.config_present

    def describe(self) -> list[str]:
        lines: list[str] = []
        if not self.kernel_enabled:
            lines.append(
                "SELinux is disabled in this node's kernel (or not built in): volumes are mounted "
                "without SELinux labels"
            )
        else:
            mode = {True: "enforcing", False: "permissive", None: "mode unknown"}[self.enforcing]
            lines.append(f"SELinux is enabled in this node's kernel ({mode})")
        if self.evidence:
            lines.append(f"how the kernel's SELinux state was found: {self.evidence}")
        if not self.selinuxfs_mounted:
            lines.append("/sys/fs/selinux: no selinuxfs mounted in the driver's view")
        elif self.selinuxfs_writable:
            lines.append("/sys/fs/selinux: selinuxfs mounted read-write")
        else:
            lines.append(
                "/sys/fs/selinux: selinuxfs mounted read-only (libselinux counts that as "
                "SELinux disabled)"
            )
        lines.append("/etc/selinux/config: " + ("present" if self.config_present else "missing"))
        lines.append(
            "util-linux mount helpers: "
            + (
                "keep SELinux mount options"
                if self.util_linux_keeps_options
                else "drop SELinux mount options without an error"
            )
        )
        return lines

    def problems(self) -> list[str]:
        if not self.kernel_enabled:
            return []
        found: list[str] = []
        if not self.selinuxfs_mounted:
            found.append(
                "the host has SELinux enabled but /sys/fs/selinux is not visible to the driver: "
                "mount it read-write into the driver's container"
            )
        elif not self.selinuxfs_writable:
            found.append(
                "/sys/fs/selinux is mounted read-only in the driver's container, which "
                "libselinux treats as SELinux disabled, so util-linux drops context= options: "
                "mount it read-write"
            )
        if not self.config_present:
            found.append(
                "/etc/selinux/config is missing in the driver's container, so util-linux drops "
                "context= options: mount the host's /etc/selinux into it read-only"
            )
        return found


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def _selinuxfs_mount(mountinfo: str) -> tuple[bool, bool]:
    """(mounted, writable) for the selinuxfs visible at /sys/fs/selinux.

    The last mountinfo line for /sys/fs/selinux wins (a later mount covers an earlier one); lines
    that are not of mountinfo's shape are skipped. Writable means neither the mount options nor
    the super options say "ro": that is libselinux's statvfs ST_RDONLY test.
    """
    result = (False, False)
    for line in mountinfo.splitlines():
        try:
            entry = parse_mountinfo_line(line)
        except ValueError:
            continue
        if entry.mount_point != "/sys/fs/selinux":
            continue
        if entry.fs_type != "selinuxfs":
            result = (False, False)
            continue
        result = (True, not entry.read_only)
    return result


def _looks_like_context(text: str | None) -> bool:
    return text is not None and _CONTEXT_SHAPE.fullmatch(text.strip("\0\n ")) is not None


def _kernel_enabled(root: str, selinuxfs_mounted: bool) -> tuple[bool, str]:
    """Whether the running kernel has SELinux enabled, and which signal said so.

    Signals in order, chosen to work when a container runtime hides selinuxfs:
    1. <root>/sys/kernel/security/lsm (securityfs) lists the active LSMs; when it can be read it
       decides either way.
    2. A selinuxfs mount: the kernel only registers selinuxfs when SELinux is enabled.
    3. <root>/proc/self/attr/selinux/current, then <root>/proc/self/attr/current, holding a
       SELinux context (user:role:type[:level]); AppArmor and Smack show other shapes.
    4. A security.selinux xattr on <root>/proc. With SELinux enabled the kernel reports a label for
       every inode, even on procfs, which stores no xattrs; <root>/ itself is not asked, because a
       disk filesystem keeps stale labels from an earlier SELinux boot.
    """
    lsm = _read_text(os.path.join(root, "sys/kernel/security/lsm"))
    if lsm is not None:
        names = [name.strip() for name in lsm.strip("\0\n ").split(",")]
        return "selinux" in names, "/sys/kernel/security/lsm"
    if selinuxfs_mounted:
        return True, "selinuxfs mount at /sys/fs/selinux"
    for attr in ("proc/self/attr/selinux/current", "proc/self/attr/current"):
        if _looks_like_context(_read_text(os.path.join(root, attr))):
            return True, f"/{attr}"
    try:
        label = read_label(os.path.join(root, "proc"))
    except OSError:
        label = None
    if _looks_like_context(label):
        return True, "security.selinux xattr on /proc"
    return False, "no SELinux signal (lsm list unreadable, no selinuxfs, no SELinux context)"


def probe_support(root: str = "/") -> SELinuxSupport:
    """What the node and this process can see of SELinux. root prefixes every path (for tests).

    Never raises: a file that cannot be read counts as absent.
    """
    try:
        mountinfo = _read_text(os.path.join(root, "proc/self/mountinfo")) or ""
        mounted, writable = _selinuxfs_mount(mountinfo)
        kernel_enabled, evidence = _kernel_enabled(root, mounted)
        config_present = os.path.isfile(os.path.join(root, "etc/selinux/config"))
        enforcing: bool | None = None
        if mounted:
            value = _read_text(os.path.join(root, "sys/fs/selinux/enforce"))
            if value is not None and value.strip() in ("0", "1"):
                enforcing = value.strip() == "1"
    except Exception as exc:  # a probe must never take the driver down
        return SELinuxSupport(False, False, False, False, None, f"probe failed: {exc!r}")
    return SELinuxSupport(kernel_enabled, mounted, writable, config_present, enforcing, evidence)
