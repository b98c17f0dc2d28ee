"""SELinux label policy: what a conflict between labels means for a pod author, and the options a
labelled mount needs beside its label.

- A volume carries one label on a node. Pods that share it must use the same label; the messages
  here say which field differs and the ways out (``conflict_message``).
- ``context=`` may come twice in mount flags: a StorageClass (through the PersistentVolume's
  mountOptions) may set one, and kubelet appends the pod's after the mountOptions. Two different
  labels are refused (``two_contexts_message``): the request contradicts itself, and retrying it
  unchanged can never succeed. The driver cannot see where a flag came from; it only knows that
  kubelet puts the pod's label last, and the message says no more than that.
- With a label, each mount needs a superblock of its own. Some filesystems share one between mounts
  of the same source unless told not to (NFS: ``nosharecache``, CIFS: ``nosharesock``); which option
  that is belongs to the kind of volume (a Backend's ``label_extra_options``), and
  ``with_label_extras`` adds it.

Pure logic: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from .labels import SELinuxLabel, label_difference, same_label
from .split import split_outside_quotes


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


def with_label_extras(options: Sequence[str], extras: Sequence[str], labelled: bool) -> list[str]:
    """options plus each of extras that none of the options already gives, when the mount carries
    a label; options unchanged otherwise. extras are the kind's options that give a labelled
    mount a superblock of its own (``Backend.label_extra_options``)."""
    result = list(options)
    if not labelled:
        return result
    given: set[str] = set()
    for entry in result:
        try:
            given.update(split_outside_quotes(entry))
        except ValueError:
            given.add(entry)
    result.extend(extra for extra in dict.fromkeys(extras) if extra not in given)
    return result
