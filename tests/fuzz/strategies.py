"""Hypothesis strategies that build any CSI request message, field by field from its descriptor.

Generic by design: every field of every request gets a strategy from its type, and fields whose
name says what they hold (ids, paths, mount flags, sizes) get values aimed at the driver's
weak spots: NUL bytes, '..', very long strings, odd unicode, huge and negative sizes, real ids
mixed with forged ones, paths inside and outside kubelet's directory, hostile mount options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from csi_hostpath_selinux._proto import csi_pb2 as pb

INT64 = (-(2**63), 2**63 - 1)
UINT64 = (0, 2**64 - 1)
INT32 = (-(2**31), 2**31 - 1)
#: Unicode without surrogates (a protobuf string must be valid UTF-8).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
ODD = [
    "",
    ".",
    "..",
    "../../etc",
    "/",
    "//",
    "\x00",
    "a\x00b",
    "\u202e\u0000\ufeff",
    "é" * 3,
    "\U0001f4a9",
    "x" * 5000,
    "%2e%2e/",
    "\\..\\..",
    "$(reboot)",
    "`id`",
    "; rm -rf /",
    "-o remount",
    "\n",
]
FLAGS = [
    "ro",
    "rw",
    "nosuid",
    "noexec",
    "nodev",
    "noatime",
    "bind",
    "rbind",
    "remount",
    "move",
    "loop",
    "offset=4096",
    "x-mount.mkdir",
    "uid=0",
    "size=1T",
    "nosharecache",
    "dirsync",
    'context="system_u:object_r:container_file_t:s0:c1,c2"',
    'context="system_u:object_r:container_file_t:s0:c1,c2',
    "context=system_u:object_r:container_file_t:s0:c1,c2",
    'fscontext="system_u:object_r:container_file_t:s0"',
    'defcontext="system_u:object_r:container_file_t:s0"',
    'rootcontext="system_u:object_r:container_file_t:s0"',
    'context=""',
    "context",
    "=",
    ",",
    "ro,remount",
]
FS_TYPES = ["", "ext4", "xfs", "ext3", "btrfs", "tmpfs", "proc", "nfs", "cifs", "../ext4", "EXT4"]
SIZES = [0, 1, -1, 4096, 1 << 20, 8 << 20, 64 << 20, 300 << 20, 1 << 30, 1 << 40, 2**63 - 1]


@dataclass
class Pools:
    """Values from the running test: real ids and paths under its directories."""

    volume_ids: list[str] = field(default_factory=list)
    snapshot_ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    kinds: Sequence[str] = ("image", "directory", "nfs", "cifs", "", "../image", "IMAGE")


def one_of_values(values: Sequence[Any], *more: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(list(values)), *more)


def ids(real: list[str], prefix: str) -> st.SearchStrategy[str]:
    forged = st.builds(lambda s: prefix + s, one_of_values(ODD, TEXT))
    hexed = st.text("0123456789abcdef", min_size=31, max_size=33).map(lambda h: prefix + h)
    return st.one_of(st.sampled_from(real) if real else st.nothing(), forged, hexed, TEXT)


def paths(pools: Pools) -> st.SearchStrategy[str]:
    base = st.sampled_from(pools.paths) if pools.paths else st.just("/")
    suffix = one_of_values(ODD, TEXT, st.just("mount"), st.just("globalmount"))
    joined = st.builds(lambda b, s: f"{b}/{s}", base, suffix)
    return st.one_of(base, joined, one_of_values(ODD, TEXT))


def sizes() -> st.SearchStrategy[int]:
    return one_of_values(SIZES, st.integers(*INT64), st.integers(0, 2 << 30))


def string_for(name: str, pools: Pools) -> st.SearchStrategy[str]:
    by_name: dict[str, st.SearchStrategy[str]] = {
        "volume_id": ids(pools.volume_ids, "vol-"),
        "source_volume_id": ids(pools.volume_ids, "vol-"),
        "snapshot_id": ids(pools.snapshot_ids, "snap-"),
        "group_snapshot_id": ids(pools.snapshot_ids, "snap-"),
        "base_snapshot_id": ids(pools.snapshot_ids, "snap-"),
        "fs_type": one_of_values(FS_TYPES, TEXT),
        "mount_flags": one_of_values(FLAGS, TEXT, st.sampled_from(ODD)),
        "volume_mount_group": one_of_values(["0", "1000", "-1", "4294967296", "root"], TEXT),
        "starting_token": one_of_values(["0", "1", "-1", "99999999999999999999", "abc"], TEXT),
    }
    if name in by_name:
        return by_name[name]
    if "path" in name:
        return paths(pools)
    return one_of_values(ODD, TEXT)


def map_for(name: str, pools: Pools) -> st.SearchStrategy[dict[str, str]]:
    keys = one_of_values(
        ["kind", "csi.storage.k8s.io/fstype", "csi.storage.k8s.io/ephemeral", "size", "server"],
        TEXT,
        st.sampled_from(ODD),
    )
    values = one_of_values([*pools.kinds, "true", "false", "1Gi", "-1"], TEXT, st.sampled_from(ODD))
    return st.dictionaries(keys, values, max_size=3)


_T = FieldDescriptor
_BY_TYPE: dict[int, st.SearchStrategy[Any]] = {
    _T.TYPE_BYTES: st.binary(max_size=64),
    _T.TYPE_BOOL: st.booleans(),
    _T.TYPE_INT64: sizes(),
    _T.TYPE_SINT64: sizes(),
    _T.TYPE_SFIXED64: sizes(),
    _T.TYPE_UINT64: st.integers(*UINT64),
    _T.TYPE_FIXED64: st.integers(*UINT64),
    _T.TYPE_INT32: st.integers(*INT32),
    _T.TYPE_SINT32: st.integers(*INT32),
    _T.TYPE_SFIXED32: st.integers(*INT32),
    _T.TYPE_UINT32: st.integers(0, 2**32 - 1),
    _T.TYPE_FIXED32: st.integers(0, 2**32 - 1),
    _T.TYPE_DOUBLE: st.floats(),
    _T.TYPE_FLOAT: st.floats(width=32),
}


def scalar(fd: FieldDescriptor, pools: Pools) -> st.SearchStrategy[Any]:
    if fd.type == _T.TYPE_STRING:
        return string_for(fd.name, pools)
    if fd.type == _T.TYPE_ENUM and fd.enum_type is not None:
        top = max(v.number for v in fd.enum_type.values)
        return st.integers(-1, top + 2)
    if fd.type in _BY_TYPE:
        return _BY_TYPE[fd.type]
    raise TypeError(f"no strategy for field {fd.full_name} of type {fd.type}")


def is_repeated(fd: FieldDescriptor) -> bool:
    flag = getattr(fd, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return getattr(fd, "label", 0) == FieldDescriptor.LABEL_REPEATED


def is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def plausible_capability() -> st.SearchStrategy[pb.VolumeCapability]:
    """A well-formed capability with fuzzed flags: gets past validation to the mount code."""
    mode_values = [
        pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER,
        pb.VolumeCapability.AccessMode.SINGLE_NODE_READER_ONLY,
        pb.VolumeCapability.AccessMode.SINGLE_NODE_SINGLE_WRITER,
        pb.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER,
    ]
    modes = st.sampled_from(mode_values).map(lambda m: pb.VolumeCapability.AccessMode(mode=m))
    mount = st.builds(
        lambda fs, flags, group, mode: pb.VolumeCapability(
            mount=pb.VolumeCapability.MountVolume(
                fs_type=fs, mount_flags=flags, volume_mount_group=group
            ),
            access_mode=mode,
        ),
        st.sampled_from(["", "ext4", "xfs"]),
        st.lists(one_of_values(FLAGS, TEXT), max_size=3),
        st.sampled_from(["", "", "1000", "0", "-5", "x"]),
        modes,
    )
    block = modes.map(
        lambda mode: pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(), access_mode=mode)
    )
    return st.one_of(mount, block)


@st.composite
def message(draw: st.DrawFn, desc: Descriptor, pools: Pools, depth: int = 0) -> Message:
    """A message of type desc with a random subset of its fields set (deeper levels sparser)."""
    if desc.full_name == "csi.v1.VolumeCapability" and draw(st.booleans()):
        return draw(plausible_capability())
    cls = pb_class(desc)
    msg = cls()
    for fd in desc.fields:
        if not draw(st.booleans()) and (depth > 0 or not draw(st.booleans())):
            continue  # top-level fields are set three times in four, nested ones half the time
        if is_map(fd):
            getattr(msg, fd.name).update(draw(map_for(fd.name, pools)))
        elif fd.message_type is not None:
            if fd.message_type.full_name.startswith("google.protobuf."):
                continue  # wrappers and timestamps: the driver only reads, never writes them
            if depth >= 4:
                continue
            sub = message(fd.message_type, pools, depth + 1)
            if is_repeated(fd):
                getattr(msg, fd.name).extend(draw(st.lists(sub, max_size=2)))
            else:
                getattr(msg, fd.name).CopyFrom(draw(sub))
        elif is_repeated(fd):
            getattr(msg, fd.name).extend(draw(st.lists(scalar(fd, pools), max_size=4)))
        else:
            setattr(msg, fd.name, draw(scalar(fd, pools)))
    return msg


def pb_class(desc: Descriptor) -> type[Message]:
    """The generated class of desc (nested types walk down from their top-level parent)."""
    names = desc.full_name.removeprefix("csi.v1.").split(".")
    obj: Any = pb
    for name in names:
        obj = getattr(obj, name)
    assert isinstance(obj, type) and issubclass(obj, Message), desc.full_name
    return obj
