"""SELinux labels and mount options: parse what kubelet sends, check the node, read labels back.

Pure logic first (labels, mount flags, per-filesystem extras, messages), then a few small OS probes
(the ``security.selinux`` xattr and the node's SELinux support). Nothing here mounts anything.

How kubelet sends a label: it appends ``context="<label>"`` as one whole entry of
``VolumeCapability.mount.mount_flags``, double-quoted because an MCS level contains a comma
(``s0:c15,c25``). Entries are therefore never split on commas inside a SELinux value.

Decisions taken here (the README repeats them):

- A label must have four fields, ``user:role:type:level``. kubelet only sends a context when the pod
  gives at least ``seLinuxOptions.level``, so a three-field label never comes from kubelet; it is
  refused rather than guessed at.
- An entry that holds a SELinux option after a comma (``ro,context="..."``, as an administrator may
  write in a StorageClass) is accepted: the SELinux option is taken out and checked like any other,
  and the remaining plain options stay together as one entry of ``MountFlags.other``. A quoted value
  ends at its closing quote; an unquoted value runs to the end of the entry, because nothing tells
  where an unquoted MCS level ends (``context=u:r:t:s0:c1,c2,ro`` is refused as a bad category).
- Labels are compared in the kernel's canonical form (``canonical()``): the kernel prints
  ``s0:c0,c1,c2`` back as ``s0:c0.c2``, so comparing the text kubelet sent with what mountinfo shows
  would report a correct mount as wrong.
- ``context=`` may come twice: a StorageClass (through the PersistentVolume's mountOptions) may set
  one, and kubelet appends the pod's after the mountOptions. The same label twice (compared
  canonically) is one mount with that label; two different labels are refused with
  INVALID_ARGUMENT (``two_contexts_message``): the request contradicts itself, and retrying it
  unchanged can never succeed. The driver cannot see where a flag came from; it only knows that
  kubelet puts the pod's label last, and the message says no more than that.
- Every source of mount options (mount flags, the NFS/CIFS ``mountOptions`` parameter) goes through
  the same checks (``check_plain_option``), and stage mounts get ``nosuid,nodev`` first
  (``STAGE_DEFAULT_OPTIONS``), so only an explicit ``suid`` or ``dev`` in the PersistentVolume's
  mountOptions turns them off.
- The type of a label is never assumed: ``container_file_t`` (Fedora, RHEL), ``svirt_lxc_file_t``
  (Debian, Ubuntu) and any custom type are handled alike.
"""

from __future__ import annotations

import errno
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from .errors import InvalidArgument, LabelVerificationError

SELINUX_OPTION_KEYS = ("context", "fscontext", "defcontext", "rootcontext")

# The names refpolicy and container-selinux define: sensitivities s0..s15, categories c0..c1023.
MAX_SENSITIVITY = 15
MAX_CATEGORY = 1023

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

# With a label, each mount needs a superblock of its own; these options stop network filesystems
# from sharing one between mounts of the same export or share (see DESIGN.md).
NETWORK_EXTRAS = {
    "nfs": "nosharecache",
    "nfs4": "nosharecache",
    "cifs": "nosharesock",
    "smb3": "nosharesock",
}

# SELinux user, role and type names as checkpolicy accepts them: ASCII, a letter first, then
# letters, digits, '_' and '-', with single dots between parts (CIL namespaces use dots).
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
_NOT_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.:,-]")
_SENSITIVITY = re.compile(r"s(0|[1-9][0-9]*)")
_CATEGORY_ITEM = re.compile(r"c(0|[1-9][0-9]*)(?:\.c(0|[1-9][0-9]*))?")
# A security context as /proc/<pid>/attr/current shows it under SELinux (AppArmor and Smack show
# profile or label names without colons).
_CONTEXT_SHAPE = re.compile(
    r"[A-Za-z][A-Za-z0-9_.-]*:[A-Za-z][A-Za-z0-9_.-]*:[A-Za-z][A-Za-z0-9_.-]*(?::[A-Za-z0-9:,.-]+)?"
)


# ---------------------------------------------------------------------------------------------
# labels


@dataclass(frozen=True)
class _Level:
    sensitivity: int
    categories: frozenset[int]

    def dominates(self, other: _Level) -> bool:
        return self.sensitivity >= other.sensitivity and self.categories >= other.categories

    def canonical(self) -> str:
        if not self.categories:
            return f"s{self.sensitivity}"
        return f"s{self.sensitivity}:{_format_categories(self.categories)}"


def _format_categories(categories: frozenset[int]) -> str:
    """Categories the way the kernel prints them: runs of three or more as cA.cB, others listed."""
    parts: list[str] = []
    ordered = sorted(categories)
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        first, last = ordered[start], ordered[end]
        if end - start >= 2:
            parts.append(f"c{first}.c{last}")
        else:
            parts.extend(f"c{n}" for n in ordered[start : end + 1])
        start = end + 1
    return ",".join(parts)


def _parse_single_level(text: str) -> _Level:
    sens_text, colon, cats_text = text.partition(":")
    match = _SENSITIVITY.fullmatch(sens_text)
    if match is None:
        raise ValueError(f"sensitivity {sens_text!r} is not of the form s0..s{MAX_SENSITIVITY}")
    sensitivity = int(match.group(1))
    if sensitivity > MAX_SENSITIVITY:
        raise ValueError(f"sensitivity {sens_text} is above s{MAX_SENSITIVITY}")
    categories: set[int] = set()
    if colon:
        if not cats_text:
            raise ValueError(f"level {text!r} has ':' but no categories after it")
        for item in cats_text.split(","):
            cat = _CATEGORY_ITEM.fullmatch(item)
            if not item:
                raise ValueError(f"level {text!r} has an empty category")
            if cat is None:
                raise ValueError(
                    f"category {item!r} is not of the form cN or cN.cM (N, M from 0 to "
                    f"{MAX_CATEGORY})"
                )
            low = int(cat.group(1))
            high = int(cat.group(2)) if cat.group(2) is not None else low
            for number in (low, high):
                if number > MAX_CATEGORY:
                    raise ValueError(f"category c{number} is above c{MAX_CATEGORY}")
            if cat.group(2) is not None and low >= high:
                raise ValueError(f"category range {item} does not go upwards (c{low} >= c{high})")
            categories.update(range(low, high + 1))
    return _Level(sensitivity, frozenset(categories))


def _parse_level(text: str) -> tuple[_Level, _Level]:
    """An MLS level or range (``low[-high]``); raises ValueError unless high dominates low."""
    if not text:
        raise ValueError("the MLS level is empty")
    low_text, dash, high_text = text.partition("-")
    if dash and not high_text:
        raise ValueError(f"MLS range {text!r} has no high level after '-'")
    low = _parse_single_level(low_text)
    high = _parse_single_level(high_text) if dash else low
    if not high.dominates(low):
        raise ValueError(
            f"MLS range {text!r}: the high level {high_text} does not dominate the low level "
            f"{low_text} (its sensitivity and categories must include the low level's)"
        )
    return low, high


@dataclass(frozen=True)
class SELinuxLabel:
    """A validated SELinux label, ``user:role:type:level``, kept exactly as it was written."""

    user: str
    role: str
    type: str
    level: str

    @classmethod
    def parse(cls, text: str) -> SELinuxLabel:
        """Parse and validate a label; ValueError says what is wrong in plain words."""
        if not text:
            raise ValueError("the label is empty")
        if not text.isascii() or not text.isprintable():
            raise ValueError(f"the label {text!a} holds characters outside printable ASCII")
        if any(ch.isspace() for ch in text):
            raise ValueError(f"the label {text!r} contains whitespace")
        bad = sorted(set(_NOT_LABEL_CHARS.findall(text)))
        if bad:
            raise ValueError(
                f"the label {text!r} contains {' '.join(bad)}: a label holds only letters, "
                "digits and _ . - : ,"
            )
        fields = text.split(":", 3)
        if len(fields) < 4:
            raise ValueError(
                f"the label {text!r} has {len(fields)} field(s); a label is user:role:type:level, "
                "for example system_u:object_r:container_file_t:s0:c1,c2 (kubelet always sends "
                "a level)"
            )
        user, role, type_, level = fields
        for what, value in (("user", user), ("role", role), ("type", type_)):
            if not _IDENTIFIER.fullmatch(value):
                raise ValueError(
                    f"the SELinux {what} {value!r} in {text!r} is not a valid name (a letter, "
                    "then letters, digits, '_', '-', or single dots)"
                    if value
                    else f"the SELinux {what} in {text!r} is empty"
                )
        try:
            _parse_level(level)
        except ValueError as exc:
            raise ValueError(f"the MLS level {level!r} in {text!r} is invalid: {exc}") from None
        return cls(user, role, type_, level)

    def __str__(self) -> str:
        return f"{self.user}:{self.role}:{self.type}:{self.level}"

    def canonical(self) -> str:
        """The label as the kernel prints it back (mountinfo, xattrs): categories sorted, runs of
        three or more as cA.cB, and a range whose ends are equal as one level."""
        low, high = _parse_level(self.level)
        level = low.canonical() if low == high else f"{low.canonical()}-{high.canonical()}"
        return f"{self.user}:{self.role}:{self.type}:{level}"


def same_label(a: str | None, b: str | None) -> bool:
    """Whether two labels (or two absences of one) mean the same thing to the kernel."""
    if a is None or b is None:
        return a is b
    return _canonical_or_raw(a) == _canonical_or_raw(b)


def _canonical_or_raw(text: str) -> str:
    try:
        return SELinuxLabel.parse(text).canonical()
    except ValueError:
        return text


# ---------------------------------------------------------------------------------------------
# mount flags


@dataclass(frozen=True)
class MountFlags:
    """The mount flags of one request: SELinux options parsed, everything else kept as given."""

    context: SELinuxLabel | None
    fscontext: SELinuxLabel | None
    defcontext: SELinuxLabel | None
    rootcontext: SELinuxLabel | None
    other: tuple[str, ...]

    @property
    def labelled(self) -> bool:
        return any(self._selinux_pairs())

    def _selinux_pairs(self) -> Iterator[tuple[str, SELinuxLabel]]:
        for key in SELINUX_OPTION_KEYS:
            label: SELinuxLabel | None = getattr(self, key)
            if label is not None:
                yield key, label

    def selinux_options(self) -> list[str]:
        """The SELinux options, always double-quoted so a comma in the level survives libmount."""
        return [f'{key}="{label}"' for key, label in self._selinux_pairs()]

    def all_options(self) -> list[str]:
        return [*self.other, *self.selinux_options()]

    def for_stage(self) -> MountFlags:
        """These flags with STAGE_DEFAULT_OPTIONS first (so the request's own options win)."""
        return replace(self, other=(*STAGE_DEFAULT_OPTIONS, *self.other))


def _show(text: str, limit: int = 80) -> str:
    """A flag quoted for a message: control and non-ASCII characters escaped, long ones cut."""
    if len(text) > limit:
        return f"{text[:limit]!a}... ({len(text)} characters)"
    return ascii(text)


def _piece_spans(entry: str) -> list[tuple[int, int]]:
    """Start and end of each comma-separated piece of entry, ignoring commas inside "quotes"."""
    spans: list[tuple[int, int]] = []
    start = 0
    quoted = False
    for index, char in enumerate(entry):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            spans.append((start, index))
            start = index + 1
    if quoted:
        raise ValueError("it has an unbalanced double quote")
    spans.append((start, len(entry)))
    return spans


def split_outside_quotes(text: str) -> list[str]:
    """Split a comma-joined option string on the commas that are not inside double quotes."""
    return [text[start:end] for start, end in _piece_spans(text)]


def _check_entry_text(entry: str) -> None:
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


def _label_value(key: str, value: str) -> SELinuxLabel:
    """The label of one SELinux option value, quoted or not; ValueError says why not."""
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"'):
            raise ValueError(f"the {key} value has text after its closing quote")
        value = value[1:-1]
        if '"' in value:
            raise ValueError(f"the {key} value has a double quote inside it")
    elif '"' in value:
        raise ValueError(f"the {key} value has a double quote inside it")
    if not value:
        raise ValueError(f"{key}= has an empty value")
    return SELinuxLabel.parse(value)


def parse_mount_flags(flags: Sequence[str]) -> MountFlags:
    """Read ``VolumeCapability.mount.mount_flags`` the way kubelet sends them.

    Each entry is one whole option, or several plain options joined by commas (StorageClass
    mountOptions). Raises InvalidArgument naming the flag for anything the kernel would refuse,
    silently ignore, or that would let the request choose a different source or propagation.
    """
    labels: dict[str, SELinuxLabel] = {}
    contexts: list[SELinuxLabel] = []
    other: list[str] = []
    for entry in flags:
        try:
            plain = _parse_entry(entry, labels, contexts)
        except ValueError as exc:
            raise InvalidArgument(f"mount flag {_show(entry)} is invalid: {exc}") from None
        if plain is not None:
            other.append(plain)
    if contexts:
        labels["context"] = _one_context(contexts)

    total = sum(len(option.encode("utf-8", "surrogatepass")) + 1 for option in other) + sum(
        len(key) + len(str(label)) + 4 for key, label in labels.items()
    )
    if total > MAX_MOUNT_OPTIONS_LENGTH:
        raise InvalidArgument(
            f"the mount flags are {total} bytes together; the kernel accepts at most "
            f"{MAX_MOUNT_OPTIONS_LENGTH}"
        )
    if "context" in labels:
        # The kernel refuses context= together with fscontext= or defcontext=: context= labels
        # the whole filesystem, so there is nothing left for the other two to label.
        # rootcontext= is refused with it too: the kernel accepts the pair, but both set the label
        # of the root inode, so the volume's root would end up with one label and every other file
        # with another, which is never what a pod asked for.
        for key in ("fscontext", "defcontext", "rootcontext"):
            if key in labels:
                raise InvalidArgument(
                    f'mount flags context="{labels["context"]}" and {key}="{labels[key]}" cannot '
                    f"be used together: context= labels every file of the volume, including its "
                    f"root, so {key}= would contradict it"
                )
    return MountFlags(
        context=labels.get("context"),
        fscontext=labels.get("fscontext"),
        defcontext=labels.get("defcontext"),
        rootcontext=labels.get("rootcontext"),
        other=tuple(other),
    )


def _one_context(contexts: Sequence[SELinuxLabel]) -> SELinuxLabel:
    """The one label of every context= given: all the same (canonically), or InvalidArgument."""
    last = contexts[-1]
    if all(same_label(str(c), str(last)) for c in contexts):
        return last
    raise InvalidArgument(two_contexts_message(contexts))


def _parse_entry(
    entry: str, labels: dict[str, SELinuxLabel], contexts: list[SELinuxLabel]
) -> str | None:
    """Record the SELinux options of one entry in labels (context= in contexts, in order: it may
    come twice); return what is left for ``other``: the entry exactly as given when it has no
    SELinux option, else its plain pieces re-joined."""
    _check_entry_text(entry)
    spans = _piece_spans(entry)
    plain: list[str] = []
    found_selinux = False
    index = 0
    while index < len(spans):
        start, end = spans[index]
        piece = entry[start:end]
        key, equals, _ = piece.partition("=")
        index += 1
        if key in SELINUX_OPTION_KEYS:
            found_selinux = True
            if not equals:
                raise ValueError(f'{key} needs a value: {key}="user:role:type:level"')
            value = piece[len(key) + 1 :]
            if not value:
                raise ValueError(f"{key}= has an empty value")
            if not value.startswith('"'):
                value = entry[start + len(key) + 1 :]
                # Unquoted: the value runs to the end of the entry, because an MCS level may
                # contain commas and nothing tells where it ends.
                index = len(spans)
            if key in labels:
                raise ValueError(f'{key}= is given more than once (already {key}="{labels[key]}")')
            try:
                label = _label_value(key, value)
            except ValueError as exc:
                hint = ""
                if not value.startswith('"') and "," in value:
                    hint = (
                        f" (an unquoted {key}= value runs to the end of the flag: quote it, "
                        'as in context="...", or put other options in flags of their own)'
                    )
                raise ValueError(f"{exc}{hint}") from None
            if key == "context":
                contexts.append(label)
            else:
                labels[key] = label
            continue
        if piece.startswith('"') and found_selinux:
            raise ValueError(
                f"{_show(piece)} follows a quoted SELinux label after a comma: a label goes "
                'inside one pair of double quotes, as in context="user:role:type:s0:c1,c2"'
            )
        _check_plain_piece(piece, key)
        plain.append(piece)
    if not found_selinux:
        return entry
    return ",".join(plain) if plain else None


def _check_plain_piece(piece: str, key: str, source: str = "mount flags") -> None:
    if not piece:
        raise ValueError("it has an empty option between commas")
    if piece != piece.strip():
        raise ValueError(f"option {_show(piece)} has whitespace around it")
    if piece.startswith('"'):
        raise ValueError(f"option {_show(piece)} starts with a double quote: it has no name")
    lowered = key.lower()
    if lowered in SELINUX_OPTION_KEYS:
        raise ValueError(f"SELinux option {key}= must be written in lower case ({lowered}=)")
    reason = FORBIDDEN_MOUNT_OPTIONS.get(lowered)
    if reason is not None:
        raise ValueError(f"option {_show(key)} is not allowed in {source}: it {reason}")


def check_plain_option(option: str, source: str) -> None:
    """The policy of mount flags for one option of another source (source names it in the
    message): no controls, no forbidden option, no SELinux option. Raises InvalidArgument."""
    try:
        _check_entry_text(option)
        key = option.partition("=")[0]
        if key.lower() in SELINUX_OPTION_KEYS:
            raise ValueError(
                "SELinux options do not belong here: kubelet sends the pod's label at "
                "NodeStageVolume"
            )
        _check_plain_piece(option, key, source)
    except ValueError as exc:
        raise InvalidArgument(f"{source}: option {_show(option)} is invalid: {exc}") from None


def with_filesystem_extras(fs_type: str, options: Sequence[str], labelled: bool) -> list[str]:
    """options plus the option a network filesystem needs so a labelled mount gets its own
    superblock (nosharecache for NFS, nosharesock for CIFS/SMB3); unchanged for everything else."""
    result = list(options)
    extra = NETWORK_EXTRAS.get(fs_type.lower())
    if not labelled or extra is None:
        return result
    for entry in result:
        try:
            pieces = split_outside_quotes(entry)
        except ValueError:
            pieces = [entry]
        if extra in pieces:
            return result
    result.append(extra)
    return result


def label_from_super_options(super_options: Sequence[str]) -> str | None:
    """The context= label of a mountinfo super-options list, without quotes; None without one."""
    for option in super_options:
        if option.startswith("context="):
            value = option[len("context=") :]
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None


# ---------------------------------------------------------------------------------------------
# messages


_LABEL_FIELDS = ("user", "role", "type", "level")


def label_difference(a: str, b: str) -> list[tuple[str, str, str]]:
    """The fields in which two labels differ, as (field, in a, in b); levels compared in the
    kernel's canonical form. [] when they are the same or one of them is not a valid label."""
    try:
        first, second = SELinuxLabel.parse(a), SELinuxLabel.parse(b)
    except ValueError:
        return []
    found = []
    for name in _LABEL_FIELDS:
        mine, theirs = getattr(first, name), getattr(second, name)
        if name == "level":
            low_a, high_a = _parse_level(mine)
            low_b, high_b = _parse_level(theirs)
            if (low_a, high_a) == (low_b, high_b):
                continue
        elif mine == theirs:
            continue
        found.append((name, mine, theirs))
    return found


def _difference_text(a: str, b: str, prefix: str = "") -> str:
    parts = [f"{prefix}{name} ({x} versus {y})" for name, x, y in label_difference(a, b)]
    return f" They differ in {' and '.join(parts)}." if parts else ""


def conflict_message(volume_id: str, where: str, have: str | None, want: str | None) -> str:
    """Why a volume cannot get the label a pod asks for on this node, for the pod's events."""
    have_text = f"with SELinux context {have}" if have else "without an SELinux context"
    want_text = f"needs context {want}" if want else "needs it without an SELinux context"
    differ = _difference_text(have, want, "seLinuxOptions.") if have and want else ""
    return (
        f"volume {volume_id} is mounted on this node at {where} {have_text}; this pod "
        f"{want_text}.{differ} Pods that share a volume on one node must use the same SELinux "
        "label (pod.spec.securityContext.seLinuxOptions), or set seLinuxChangePolicy: Recursive"
    )


def two_contexts_message(contexts: Sequence[SELinuxLabel]) -> str:
    """Why mount flags holding context= with different labels are refused, and the ways out.

    The driver sees only the order of the flags: kubelet appends the pod's label after the
    PersistentVolume's mountOptions, so the last context= is the one kubelet adds and the earlier
    ones are the mountOptions' (or a hand-made request's)."""
    earlier, last = [str(c) for c in contexts[:-1]], str(contexts[-1])
    shown = ", ".join(f'context="{c}"' for c in dict.fromkeys(earlier))
    if not all(same_label(c, earlier[0]) for c in earlier):
        return (
            f"the mount flags set context= {len(contexts)} times with different labels ({shown}, "
            f'then context="{last}"): the earlier ones come from the volume\'s mountOptions '
            "(the PersistentVolume's, usually copied from its StorageClass), which may set one "
            "label at most. Fix the mountOptions to a single context="
        )
    return (
        f"the mount flags ask for two SELinux contexts: {shown}, given first, and "
        f'context="{last}", given last.{_difference_text(earlier[0], last)} kubelet appends the '
        "pod's label (pod.spec.securityContext.seLinuxOptions) after the volume's mountOptions, "
        "so the first comes from the PersistentVolume's mountOptions (usually copied from its "
        "StorageClass) and the last from the pod (the driver sees only their order); a volume "
        "carries one label. Either set "
        "seLinuxChangePolicy: Recursive on the pod, so kubelet sends no label and the volume is "
        "mounted with the mountOptions' label (the pod's own label must be allowed to use it), "
        "or remove context= from the StorageClass's mountOptions (and from the mountOptions of "
        "PersistentVolumes already made from it), so the volume takes the pod's label"
    )


# ---------------------------------------------------------------------------------------------
# probes


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


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape_mountinfo(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _selinuxfs_mount(mountinfo: str) -> tuple[bool, bool]:
    """(mounted, writable) for the selinuxfs visible at /sys/fs/selinux.

    The last mountinfo line for /sys/fs/selinux wins (a later mount covers an earlier one).
    Writable means neither the mount options (field 6) nor the super options say "ro": that is
    libselinux's statvfs ST_RDONLY test.
    """
    result = (False, False)
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields[6:]:
            continue
        if _unescape_mountinfo(fields[4]) != "/sys/fs/selinux":
            continue
        separator = fields.index("-", 6)
        tail = fields[separator + 1 :]
        fs_type = tail[0] if tail else ""
        super_options = tail[2].split(",") if len(tail) > 2 else []
        if fs_type != "selinuxfs":
            result = (False, False)
            continue
        read_only = "ro" in fields[5].split(",") or "ro" in super_options
        result = (True, not read_only)
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


def verify_mounted_label(
    mount_point: str,
    super_options: Sequence[str],
    expected: SELinuxLabel,
    support: SELinuxSupport,
) -> None:
    """Check that a mount really carries expected: mountinfo's context= option and the root's
    security.selinux xattr must both be it (compared whole, in the kernel's canonical form).
    Raises LabelVerificationError saying what was found and the likely cause."""
    want = expected.canonical()
    shown = label_from_super_options(super_options)
    if shown is None:
        if not support.kernel_enabled:
            cause = "SELinux is disabled in this node's kernel"
        elif not support.util_linux_keeps_options:
            cause = (
                "/sys/fs/selinux is not mounted read-write in the driver's container (or "
                "/etc/selinux/config is missing), so util-linux dropped the context option"
            )
        else:
            cause = (
                "the option was dropped on the way to the kernel, or the kernel ignored it "
                "(it does for a bind mount of a filesystem that is already mounted)"
            )
        raise LabelVerificationError(
            f'{mount_point} was mounted with context="{expected}", but the mount table shows '
            f"no context option (its options are {','.join(super_options) or 'empty'}): {cause}"
        )
    if _canonical_or_raw(shown) != want:
        raise LabelVerificationError(
            f'{mount_point} was mounted with context="{expected}", but the mount table shows '
            f'context="{shown}": the filesystem was already mounted elsewhere with that label '
            "and the kernel kept it"
        )
    try:
        actual = read_label(mount_point)
    except OSError as exc:
        raise LabelVerificationError(
            f'{mount_point} was mounted with context="{expected}", but its label cannot be '
            f"read: {exc.strerror or exc}"
        ) from exc
    if actual is None:
        raise LabelVerificationError(
            f'{mount_point} shows context="{shown}" in the mount table, but its root has no '
            "security.selinux label: the kernel is not applying SELinux labels to it"
        )
    if _canonical_or_raw(actual) != want:
        raise LabelVerificationError(
            f'{mount_point} shows context="{shown}" in the mount table, but its root is '
            f"labelled {actual} instead of {expected}"
        )
