"""Which mount options the driver refuses, from any source: mount flags, and the NFS/CIFS
``mountOptions`` parameter alike (``check_plain_option``).

Options that change where a mount comes from, its propagation, or what security rules apply to it
are the driver's to choose; so are options naming another device or file for the filesystem to
open. Controls, NUL and a leading '-' are refused in every option. Stage mounts get ``nosuid,nodev``
first (``STAGE_DEFAULT_OPTIONS``), so only an explicit ``suid`` or ``dev`` in the PersistentVolume's
mountOptions turns them off.

Pure logic: no I/O.
"""

from __future__ import annotations

import unicodedata

from .errors import InvalidMountFlags
from .split import split_outside_quotes

SELINUX_OPTION_KEYS = ("context", "fscontext", "defcontext", "rootcontext")

# The legacy mount(2) call copies at most one page of option data, so longer flags can never work.
MAX_MOUNT_OPTIONS_LENGTH = 4096

# Options that change where a mount comes from or what security rules apply to it. The driver
# decides these itself; in mount flags (StorageClass mountOptions, or a pod's CSI request) they are
# refused. Keys are compared in lower case; an option "key=value" is matched by its key.
FORBIDDEN_MOUNT_OPTIONS: dict[str, str] = {
    # A bind mount takes any host directory as its source, and the kernel ignores context= on it.
    "bind": "makes a bind mount of another path; the driver chooses the source itself",
    # The same, including every mount below the source.
    "rbind": "makes a recursive bind mount of another path; the driver chooses the source itself",
    # Changes the flags of an existing mount (and cannot change its SELinux label).
    "remount": "changes an existing mount instead of making a new one",
    # Moves an existing mount somewhere else.
    "move": "moves an existing mount instead of making a new one",
    # Mount propagation: kubelet needs the driver's mounts to propagate to the host, so the
    # driver alone sets it. util-linux takes both the plain and the make-* spellings.
    "shared": "changes mount propagation, which the driver controls",
    "rshared": "changes mount propagation, which the driver controls",
    "slave": "changes mount propagation, which the driver controls",
    "rslave": "changes mount propagation, which the driver controls",
    "private": "changes mount propagation, which the driver controls",
    "rprivate": "changes mount propagation, which the driver controls",
    "unbindable": "changes mount propagation, which the driver controls",
    "runbindable": "changes mount propagation, which the driver controls",
    "make-shared": "changes mount propagation, which the driver controls",
    "make-rshared": "changes mount propagation, which the driver controls",
    "make-slave": "changes mount propagation, which the driver controls",
    "make-rslave": "changes mount propagation, which the driver controls",
    "make-private": "changes mount propagation, which the driver controls",
    "make-rprivate": "changes mount propagation, which the driver controls",
    "make-unbindable": "changes mount propagation, which the driver controls",
    "make-runbindable": "changes mount propagation, which the driver controls",
    # libmount sets up a loop device from the source file: a different source than the driver's.
    "loop": "makes util-linux attach a loop device; the driver attaches its own",
    "offset": "is a loop device setting; the driver attaches its own loop devices",
    "sizelimit": "is a loop device setting; the driver attaches its own loop devices",
    # Names the program util-linux runs to unmount this mount later.
    "helper": "chooses the program that unmounts the volume",
    # The same for unmounts by users (recorded in util-linux's utab).
    "uhelper": "chooses the program that unmounts the volume",
    # Options that name another device or file for the filesystem to open, as root, beside the
    # volume's own storage: the driver alone chooses what a volume is made of.
    "journal_path": "names another device for the filesystem's journal (ext4)",
    "journal_dev": "names another device for the filesystem's journal (ext4)",
    "logdev": "names another device for the filesystem's log (xfs)",
    "rtdev": "names another device for the filesystem's realtime section (xfs)",
    "source": "names the mount's source, which the driver chooses itself",
    # Mounts a subdirectory of the filesystem instead of its root (util-linux 2.39+).
    "x-mount.subdir": "mounts a subdirectory instead of the volume's root",
    # Maps file ownership through a user namespace: changes who owns every file.
    "x-mount.idmap": "changes the ownership of every file through an ID mapping",
    # Create or chown/chmod the target path: the driver owns its target paths.
    "x-mount.mkdir": "creates the target path, which the driver manages",
    "x-mount.owner": "changes the owner of the target path, which the driver manages",
    "x-mount.group": "changes the group of the target path, which the driver manages",
    "x-mount.mode": "changes the mode of the target path, which the driver manages",
}

# Every stage mount gets these first: a volume holds data that pods write, and a set-user-ID
# program or a device node on it would work for whoever runs or opens it on this node. Options
# given later win, so a PersistentVolume whose mountOptions say "suid" or "dev" (the
# administrator's decision: e.g. container images stored on a volume) gets what it asks for.
STAGE_DEFAULT_OPTIONS = ("nosuid", "nodev")


def show(text: str, limit: int = 80) -> str:
    """A flag quoted for a message: control and non-ASCII characters escaped, long ones cut."""
    if len(text) > limit:
        return f"{text[:limit]!a}... ({len(text)} characters)"
    return ascii(text)


def check_entry_text(entry: str) -> None:
    """Refuse (ValueError) an entry that is empty, too long, holds a control character or reads
    as a command-line switch."""
    if not entry:
        raise ValueError("it is empty")
    if len(entry.encode("utf-8", "surrogatepass")) > MAX_MOUNT_OPTIONS_LENGTH:
        raise ValueError(f"it is longer than {MAX_MOUNT_OPTIONS_LENGTH} bytes")
    for char in entry:
        # NUL ends the string the kernel sees; newlines and other controls forge log and
        # mountinfo lines.
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise ValueError(f"it contains the control character {char!a}")
    if entry[0] == "-":
        raise ValueError("it starts with '-' (a command-line switch, not a mount option)")


def check_plain_piece(piece: str, key: str, source: str = "mount flags") -> None:
    """Refuse (ValueError) one plain option (key is its name): empty, padded, nameless, a
    SELinux option in the wrong case, or a forbidden option (source names where it came from)."""
    if not piece:
        raise ValueError("it has an empty option between commas")
    if piece != piece.strip():
        raise ValueError(f"option {show(piece)} has whitespace around it")
    if piece.startswith('"'):
        raise ValueError(f"option {show(piece)} starts with a double quote: it has no name")
    lowered = key.lower()
    if lowered in SELINUX_OPTION_KEYS:
        raise ValueError(f"SELinux option {key}= must be written in lower case ({lowered}=)")
    reason = FORBIDDEN_MOUNT_OPTIONS.get(lowered)
    if reason is not None:
        raise ValueError(f"option {show(key)} is not allowed in {source}: it {reason}")


def check_plain_option(option: str, source: str) -> None:
    """The policy of mount flags for one option of another source (source names it in the
    message): no controls, no forbidden option, no SELinux option. Raises InvalidMountFlags."""
    try:
        check_entry_text(option)
        key = option.partition("=")[0]
        if key.lower() in SELINUX_OPTION_KEYS:
            raise ValueError(
                "SELinux options do not belong here: kubelet sends the pod's label at "
                "NodeStageVolume"
            )
        check_plain_piece(option, key, source)
    except ValueError as exc:
        raise InvalidMountFlags(
            f"{source}: option {show(option)} is invalid: {exc}", option=option, reason=str(exc)
        ) from None


def check_option_list(text: str, source: str) -> list[str]:
    """A comma-joined option string of another source (a StorageClass parameter), split with the
    one splitter and checked option by option with ``check_plain_option``; blank pieces dropped.
    Raises InvalidMountFlags, also for an unbalanced double quote."""
    try:
        pieces = split_outside_quotes(text)
    except ValueError as exc:
        raise InvalidMountFlags(
            f"{source} {show(text)} is invalid: {exc}", option=text, reason=str(exc)
        ) from None
    options = [piece.strip() for piece in pieces if piece.strip()]
    for option in options:
        check_plain_option(option, source)
    return options
