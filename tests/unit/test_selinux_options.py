"""csi_hostpath_selinux.selinux.options: mount flags read once, as kubelet sends them."""

from __future__ import annotations

import pytest

from csi_hostpath_selinux.selinux import xattr
from csi_hostpath_selinux.selinux.errors import InvalidMountFlags
from csi_hostpath_selinux.selinux.labels import SELinuxLabel, same_label
from csi_hostpath_selinux.selinux.options import MountFlags, parse_mount_flags
from csi_hostpath_selinux.selinux.probe import SELinuxSupport
from csi_hostpath_selinux.selinux.verify import verify_mounted_label

L1 = "system_u:object_r:container_file_t:s0:c15,c25"
L2 = "system_u:object_r:container_file_t:s0:c1,c2"
SVIRT = "system_u:object_r:svirt_lxc_file_t:s0:c1,c2"
CUSTOM = "staff_u:object_r:acme.volume_file_t:s0-s0:c0.c9"
GOOD = SELinuxSupport(True, True, True, True, True)


def _ctx(text: str) -> SELinuxLabel:
    return SELinuxLabel.parse(text)


@pytest.mark.parametrize(
    ("flags", "context", "other"),
    [
        ([], None, ()),
        (["defaults"], None, ("defaults",)),
        ([f'context="{L1}"'], L1, ()),
        ([f"context={L1}"], L1, ()),
        (["noatime,nodiratime", f'context="{L1}"'], L1, ("noatime,nodiratime",)),
        (["ro", "noatime", f'context="{L2}"'], L2, ("ro", "noatime")),
        ([f'context="{L1}"', "ro"], L1, ("ro",)),
        # A SELinux option inside a comma-joined entry is found and taken out.
        ([f'ro,context="{L1}"'], L1, ("ro",)),
        ([f'context="{L1}",ro'], L1, ("ro",)),
        ([f'noatime,context="{L1}",nodev'], L1, ("noatime,nodev",)),
        ([f"ro,context={L1}"], L1, ("ro",)),
        # Plain options are kept exactly as given, quotes, unicode, '..' and all.
        (['opt="a,b"'], None, ('opt="a,b"',)),
        (["vers=4.2,..,x"], None, ("vers=4.2,..,x",)),
        (["comment=caf\u00e9"], None, ("comment=caf\u00e9",)),
        (["path=C:\\share\\"], None, ("path=C:\\share\\",)),
        (["inner space=a b"], None, ("inner space=a b",)),
        (["seclabel"], None, ("seclabel",)),
        (["contextual"], None, ("contextual",)),
        (["x-context=1"], None, ("x-context=1",)),
        (["a" * 4000], None, ("a" * 4000,)),
    ],
)
def test_mount_flags_are_read_as_kubelet_sends_them(
    flags: list[str], context: str | None, other: tuple[str, ...]
) -> None:
    parsed = parse_mount_flags(flags)
    assert parsed.context == (_ctx(context) if context else None)
    assert parsed.other == other
    assert parsed.labelled is (context is not None)
    assert (parsed.fscontext, parsed.defcontext, parsed.rootcontext) == (None, None, None)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["context="], "empty value"),
        (['context=""'], "empty value"),
        (["context"], "needs a value"),
        (["fscontext="], "fscontext= has an empty value"),
        (['context="u:r:t"'], "3 field"),
        ([f'context="{L1}'], "unbalanced double quote"),
        ([f'context={L1}"'], "unbalanced double quote"),
        (['opt="a'], "unbalanced double quote"),
        ([f'context="{L1}"x'], "text after its closing quote"),
        (['context="u:r:"t":s0"'], "double quote inside"),
        (['context=u:r:t"x":s0'], "double quote inside"),
        ([f'context="{L1}\x00"'], "control character"),
        (["ro\x00,rw"], "control character"),
        (["noatime\n"], "control character"),
        ([f'context="{L1}"\nro'], "control character"),
        (["a\u2028b"], "control character"),
        (["x" * 5000], "longer than 4096"),
        (['context="u:r:t:s0:c1,c2 "'], "whitespace"),
        (['context="sys tem_u:object_r:container_file_t:s0"'], "whitespace"),
        ([f'context="{L1}\\"'], r"contains \\"),
        (['context="../../etc:object_r:t:s0"'], "contains /"),
        (['context="u:r:t:s0:c1,c2\u00e9"'], "outside printable ASCII"),
        (['rootcontext="u:r:t:s0"', 'rootcontext="u:r:t:s0"'], "rootcontext= is given more"),
        (['fscontext="u:r:t:s0"', 'fscontext="u:r:t:s0"'], "fscontext= is given more"),
        # Trailing junk after a quoted label is refused here, not left to the kernel.
        ([f'context="{L1}","b"'], "follows a quoted SELinux label"),
        ([f'ro,context="{L1}","s0"'], "follows a quoted SELinux label"),
        (['"b"'], "starts with a double quote"),
        (['noatime,"x=1"'], "starts with a double quote"),
        # Options that name another device or unmount helper.
        (["uhelper=udisks2"], "unmounts the volume"),
        (["journal_path=/dev/sda1"], "journal"),
        (["noatime,journal_dev=0x801"], "journal"),
        (["logdev=/dev/sdb"], "log"),
        (["rtdev=/dev/sdc"], "realtime"),
        (["source=/dev/sda"], "source"),
        # An unquoted value runs to the end of its entry; the hint says to quote it.
        ([f"context={L1},ro"], "category 'ro'.*quote it"),
        ([f'context="{L1}"', 'fscontext="u:r:t:s0"'], "cannot be used together"),
        ([f'context="{L1}"', 'defcontext="u:r:t:s0"'], "cannot be used together"),
        ([f'context="{L1}"', 'rootcontext="u:r:t:s0"'], "cannot be used together"),
        (['Context="u:r:t:s0"'], "lower case"),
        (['ro,DEFCONTEXT="u:r:t:s0"'], "lower case"),
        ([""], "is empty"),
        (["noatime,,ro"], "empty option between commas"),
        (["noatime,"], "empty option between commas"),
        (["noatime, ro"], "whitespace"),
        ([" noatime"], "whitespace"),
        (["--bind"], "starts with '-'"),
        (["-o"], "starts with '-'"),
        (["bind"], "bind"),
        (["noatime,rbind"], "rbind"),
        (["REMOUNT"], "REMOUNT"),
        (["loop=/dev/loop0"], "loop"),
        (["X-mount.subdir=etc"], "subdirectory"),
        (["a" * 3000, "b" * 3000], "bytes together"),
    ],
)
def test_bad_mount_flags_are_refused_naming_the_flag(flags: list[str], message: str) -> None:
    with pytest.raises(InvalidMountFlags, match=message) as info:
        parse_mount_flags(flags)
    assert "mount flag" in info.value.message


def test_error_names_the_flag_with_hostile_characters_escaped() -> None:
    with pytest.raises(InvalidMountFlags) as info:
        parse_mount_flags([f'context="{L1}\x00\n"'])
    message = info.value.message
    assert "\x00" not in message
    assert "\n" not in message
    assert "\\x00" in message
    assert "container_file_t" in message


def test_error_for_a_very_long_flag_is_short() -> None:
    with pytest.raises(InvalidMountFlags) as info:
        parse_mount_flags(["y" * 100_000])
    assert len(info.value.message) < 300
    assert "100000 characters" in info.value.message


@pytest.mark.parametrize(
    "flags",
    [
        # the StorageClass wrote the label as kubelet does, or unquoted, or among other options
        [f'context="{L1}"', f'context="{L1}"'],
        [f"context={L1}", f'context="{L1}"'],
        [f'noatime,context="{L1}"', f'context="{L1}"'],
        # the same label in other spellings of its categories
        ['context="u:r:t:s0:c2,c0,c1"', 'context="u:r:t:s0:c0.c2"'],
        [f'context="{SVIRT}"', f'context="{SVIRT}"'],
        [f'context="{CUSTOM}"', f'context="{CUSTOM}"', f'context="{CUSTOM}"'],
    ],
)
def test_the_same_context_twice_is_one_label(flags: list[str]) -> None:
    parsed = parse_mount_flags(flags)
    assert parsed.context is not None
    assert same_label(str(parsed.context), flags[-1].split("=", 1)[1].strip('"'))
    assert len([o for o in parsed.all_options() if o.startswith("context=")]) == 1, (
        "mounted once, with one context option"
    )


@pytest.mark.parametrize(
    ("label", "type_"), [(SVIRT, "svirt_lxc_file_t"), (CUSTOM, "acme.volume_file_t")]
)
def test_types_other_than_container_file_t_are_labels_like_any_other(
    label: str, type_: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = parse_mount_flags([f'context="{label}"'])
    assert parsed.context is not None and parsed.context.type == type_
    assert parsed.selinux_options() == [f'context="{label}"']
    canonical = SELinuxLabel.parse(label).canonical()
    monkeypatch.setattr(xattr, "read_label", lambda path: canonical)
    verify_mounted_label("/m", ("rw", f'context="{canonical}"'), parsed.context, GOOD)
    other = L2 if type_ != "container_file_t" else SVIRT
    assert not same_label(label, other)


def test_stage_defaults_come_first_so_the_volumes_own_options_win() -> None:
    plain = parse_mount_flags([f'context="{L1}"']).for_stage()
    assert plain.other == ("nosuid", "nodev")
    assert plain.context == parse_mount_flags([f'context="{L1}"']).context
    explicit = parse_mount_flags(["suid,dev"]).for_stage()
    assert explicit.other == ("nosuid", "nodev", "suid,dev")


def test_all_selinux_options_are_kept_quoted_in_order() -> None:
    flags = parse_mount_flags(
        [
            "noatime",
            'rootcontext="u:r:root_t:s0"',
            "fscontext=u:r:fs_t:s0:c1,c2",
            'defcontext="u:r:def_t:s0"',
        ]
    )
    assert flags.labelled
    assert flags.context is None
    assert flags.fscontext == _ctx("u:r:fs_t:s0:c1,c2")
    assert flags.selinux_options() == [
        'fscontext="u:r:fs_t:s0:c1,c2"',
        'defcontext="u:r:def_t:s0"',
        'rootcontext="u:r:root_t:s0"',
    ]
    assert flags.all_options() == ["noatime", *flags.selinux_options()]


def test_unlabelled_flags_give_their_options_unchanged() -> None:
    flags = parse_mount_flags(["ro", "noatime,nodiratime"])
    assert not flags.labelled
    assert flags.selinux_options() == []
    assert flags.all_options() == ["ro", "noatime,nodiratime"]


def test_mount_flags_are_frozen_data() -> None:
    flags = parse_mount_flags([f'context="{L1}"'])
    assert flags == MountFlags(_ctx(L1), None, None, None, ())
    with pytest.raises(AttributeError):
        flags.context = None  # type: ignore[misc]  # the assignment under test is what mypy forbids


VFS = {"ro", "rw", "nosuid", "nodev", "noexec", "noatime", "bind"}


def test_mount_flags_give_mount_data_helper_options_and_vfs_flags_from_one_parse() -> None:
    flags = parse_mount_flags(["ro,noatime", f'context="{L1}"', "vers=4.2,hard"]).for_stage()
    assert flags.helper_options() == [
        "nosuid",
        "nodev",
        "ro,noatime",
        "vers=4.2,hard",
        f'context="{L1}"',
    ]
    assert flags.pieces() == [
        "nosuid",
        "nodev",
        "ro",
        "noatime",
        "vers=4.2",
        "hard",
        f'context="{L1}"',
    ]
    # The label's comma stays inside its quotes in mount(2)'s data string.
    assert flags.mount_data(VFS) == f'vers=4.2,hard,context="{L1}"'
    assert flags.vfs_flags(VFS) == ["nosuid", "nodev", "ro", "noatime"]


def test_unlabelled_flags_have_no_selinux_data() -> None:
    flags = parse_mount_flags(["noatime", "size=1m"])
    assert flags.mount_data(VFS) == "size=1m"
    assert flags.vfs_flags(VFS) == ["noatime"]
    assert parse_mount_flags([]).mount_data(VFS) == ""
