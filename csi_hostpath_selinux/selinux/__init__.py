"""SELinux for a CSI driver, in one package a vendor can lift whole: it imports neither gRPC nor
anything else of this driver (tests/unit/test_selinux_package.py checks that).

- ``labels``: the label grammar (``SELinuxLabel``, MLS levels, the kernel's canonical form).
- ``split``: the one splitter of comma-joined options (commas inside double quotes do not split).
- ``refused``: the options the driver refuses from any source, and the stage mount's defaults.
- ``options``: mount flags read once into ``MountFlags`` (labels, helper options, mount(2) data).
- ``policy``: label conflicts in words for pod authors, and a kind's extra options for labels.
- ``mountinfo``: a parser of /proc/<pid>/mountinfo lines.
- ``xattr``, ``probe``, ``verify``: read a label, probe the node, verify a mount's label.
- ``errors``: the package's errors, carrying their data; the driver maps them to gRPC codes.
"""

from __future__ import annotations

from .errors import InvalidMountFlags, LabelNotApplied, SELinuxError
from .labels import MAX_CATEGORY, MAX_SENSITIVITY, SELinuxLabel, label_difference, same_label
from .mountinfo import MountInfoEntry, parse_mountinfo, parse_mountinfo_line
from .options import MountFlags, parse_mount_flags
from .policy import conflict_message, two_contexts_message, with_label_extras
from .probe import SELinuxSupport, probe_support
from .refused import (
    FORBIDDEN_MOUNT_OPTIONS,
    MAX_MOUNT_OPTIONS_LENGTH,
    SELINUX_OPTION_KEYS,
    STAGE_DEFAULT_OPTIONS,
    check_option_list,
    check_plain_option,
)
from .split import split_kernel_options, split_outside_quotes
from .verify import label_from_super_options, verify_mounted_label
from .xattr import read_label

__all__ = [
    "FORBIDDEN_MOUNT_OPTIONS",
    "MAX_CATEGORY",
    "MAX_MOUNT_OPTIONS_LENGTH",
    "MAX_SENSITIVITY",
    "SELINUX_OPTION_KEYS",
    "STAGE_DEFAULT_OPTIONS",
    "InvalidMountFlags",
    "LabelNotApplied",
    "MountFlags",
    "MountInfoEntry",
    "SELinuxError",
    "SELinuxLabel",
    "SELinuxSupport",
    "check_option_list",
    "check_plain_option",
    "conflict_message",
    "label_difference",
    "label_from_super_options",
    "parse_mount_flags",
    "parse_mountinfo",
    "parse_mountinfo_line",
    "probe_support",
    "read_label",
    "same_label",
    "split_kernel_options",
    "split_outside_quotes",
    "two_contexts_message",
    "verify_mounted_label",
    "with_label_extras",
]
