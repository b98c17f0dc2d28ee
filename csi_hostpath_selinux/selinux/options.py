"""Mount flags: read ``VolumeCapability.mount.mount_flags`` once into a ``MountFlags`` value.

How kubelet sends a label: it appends ``context="<label>"`` as one whole entry of the mount flags,
double-quoted because an MCS level contains a comma (``s0:c15,c25``). Entries are therefore never
split on commas inside a SELinux value (``split.py``).

- An entry that holds a SELinux option after a comma (``ro,context="..."``, as an administrator may
  write in a StorageClass) is accepted: the SELinux option is taken out and checked like any other,
  and the remaining plain options stay together as one entry of ``MountFlags.other``. A quoted value
  ends at its closing quote; an unquoted value runs to the end of the entry, because nothing tells
  where an unquoted MCS level ends (``context=u:r:t:s0:c1,c2,ro`` is refused as a bad category).
- ``context=`` may come twice (StorageClass, then the pod's, appended by kubelet): the same label
  twice (compared canonically) is one mount with that label; two different labels are refused
  (``policy.two_contexts_message``).
- Every plain option goes through the refused-option policy (``refused.py``).

Errors are InvalidMountFlags naming the flag. Pure logic: no I/O.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, replace

from .errors import InvalidMountFlags
from .labels import SELinuxLabel, same_label
from .policy import two_contexts_message
from .refused import (
    MAX_MOUNT_OPTIONS_LENGTH,
    SELINUX_OPTION_KEYS,
    STAGE_DEFAULT_OPTIONS,
    check_entry_text,
    check_plain_piece,
    show,
)
from .split import piece_spans, split_kernel_options


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
        """Every option, entries as given: what a mount helper (mount.nfs, mount.cifs) gets."""
        return [*self.other, *self.selinux_options()]

    def helper_options(self) -> list[str]:
        """The options for a mount helper's -o: the same as all_options()."""
        return self.all_options()

    def pieces(self) -> list[str]:
        """Every single option, entries split once (outside quotes), SELinux options last."""
        plain = [piece for entry in self.other for piece in split_kernel_options(entry)]
        return [*plain, *self.selinux_options()]

    def mount_data(self, vfs_options: Container[str]) -> str:
        """The data string of mount(2): every option that is not one of vfs_options (the ones
        mount(2) takes as MS_* flags, which the caller names), joined by commas."""
        return ",".join(piece for piece in self.pieces() if piece not in vfs_options)

    def vfs_flags(self, vfs_options: Container[str]) -> list[str]:
        """The options among vfs_options, in order: what becomes MS_* flags of mount(2) or of a
        bind mount's remount (a later one overrides an earlier one, as in mount(8))."""
        return [piece for piece in self.pieces() if piece in vfs_options]

    def for_stage(self) -> MountFlags:
        """These flags with STAGE_DEFAULT_OPTIONS first (so the request's own options win)."""
        return replace(self, other=(*STAGE_DEFAULT_OPTIONS, *self.other))


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
    mountOptions). Raises InvalidMountFlags naming the flag for anything the kernel would refuse,
    silently ignore, or that would let the request choose a different source or propagation.
    """
    labels: dict[str, SELinuxLabel] = {}
    contexts: list[SELinuxLabel] = []
    other: list[str] = []
    for entry in flags:
        try:
            plain = _parse_entry(entry, labels, contexts)
        except ValueError as exc:
            raise InvalidMountFlags(
                f"mount flag {show(entry)} is invalid: {exc}", option=entry, reason=str(exc)
            ) from None
        if plain is not None:
            other.append(plain)
    if contexts:
        labels["context"] = _one_context(contexts)

    total = sum(len(option.encode("utf-8", "surrogatepass")) + 1 for option in other) + sum(
        len(key) + len(str(label)) + 4 for key, label in labels.items()
    )
    if total > MAX_MOUNT_OPTIONS_LENGTH:
        raise InvalidMountFlags(
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
                raise InvalidMountFlags(
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
    """The one label of every context= given: all the same (canonically), or InvalidMountFlags."""
    last = contexts[-1]
    if all(same_label(str(c), str(last)) for c in contexts):
        return last
    raise InvalidMountFlags(two_contexts_message(contexts))


def _parse_entry(
    entry: str, labels: dict[str, SELinuxLabel], contexts: list[SELinuxLabel]
) -> str | None:
    """Record the SELinux options of one entry in labels (context= in contexts, in order: it may
    come twice); return what is left for ``other``: the entry exactly as given when it has no
    SELinux option, else its plain pieces re-joined."""
    check_entry_text(entry)
    spans = piece_spans(entry)
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
                f"{show(piece)} follows a quoted SELinux label after a comma: a label goes "
                'inside one pair of double quotes, as in context="user:role:type:s0:c1,c2"'
            )
        check_plain_piece(piece, key)
        plain.append(piece)
    if not found_selinux:
        return entry
    return ",".join(plain) if plain else None
