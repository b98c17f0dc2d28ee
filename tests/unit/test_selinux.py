"""SELinux labels, kubelet's mount flags, filesystem extras, label read-back and support probes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from csi_hostpath_selinux import selinux
from csi_hostpath_selinux.errors import InvalidArgument, LabelVerificationError
from csi_hostpath_selinux.selinux import (
    FORBIDDEN_MOUNT_OPTIONS,
    MountFlags,
    SELinuxLabel,
    SELinuxSupport,
    conflict_message,
    label_from_super_options,
    parse_mount_flags,
    probe_support,
    same_label,
    split_outside_quotes,
    verify_mounted_label,
    with_filesystem_extras,
)

L1 = "system_u:object_r:container_file_t:s0:c15,c25"
L2 = "system_u:object_r:container_file_t:s0:c1,c2"

# ---------------------------------------------------------------------------------------------
# labels


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        (L1, ("system_u", "object_r", "container_file_t", "s0:c15,c25")),
        ("u:r:t:s0", ("u", "r", "t", "s0")),
        ("u:r:t:s15", ("u", "r", "t", "s15")),
        ("u:r:t:s0:c0", ("u", "r", "t", "s0:c0")),
        ("u:r:t:s0:c1023", ("u", "r", "t", "s0:c1023")),
        ("u:r:t:s0-s0:c0.c1023", ("u", "r", "t", "s0-s0:c0.c1023")),
        ("u:r:t:s0:c0.c3,c7", ("u", "r", "t", "s0:c0.c3,c7")),
        ("u:r:t:s0:c1-s3:c1,c2", ("u", "r", "t", "s0:c1-s3:c1,c2")),
        (
            "unconfined_u:object_r:my-app.data_t:s0",
            ("unconfined_u", "object_r", "my-app.data_t", "s0"),
        ),
    ],
)
def test_valid_labels_parse_into_fields(text: str, fields: tuple[str, str, str, str]) -> None:
    label = SELinuxLabel.parse(text)
    assert (label.user, label.role, label.type, label.level) == fields
    assert str(label) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("u:r:t", "3 field"),
        ("u:r", "2 field"),
        ("u:r:t:", "level.*empty"),
        (":r:t:s0", "user in .* is empty"),
        ("u::t:s0", "role in .* is empty"),
        ("u:r:1t:s0", "type '1t'"),
        ("u:r:t..x:s0", "type 't..x'"),
        ("u:r:t.:s0", "type 't.'"),
        ("..:r:t:s0", "user '..'"),
        ("u:r:t:s16", "above s15"),
        ("u:r:t:s01", "sensitivity 's01'"),
        ("u:r:t:x0", "sensitivity 'x0'"),
        ("u:r:t:s0:c1024", "c1024 is above c1023"),
        ("u:r:t:s0:c01", "category 'c01'"),
        ("u:r:t:s0:", "no categories"),
        ("u:r:t:s0:c1,,c2", "empty category"),
        ("u:r:t:s0:c1,", "empty category"),
        ("u:r:t:s0:c3.c1", "does not go upwards"),
        ("u:r:t:s0:c3.c3", "does not go upwards"),
        ("u:r:t:s0:c1.c2.c3", "category 'c1.c2.c3'"),
        ("u:r:t:s1-s0", "does not dominate"),
        ("u:r:t:s0:c1,c2-s0:c1", "does not dominate"),
        ("u:r:t:s0-", "no high level"),
        ("u:r:t:s0-s1-s2", "sensitivity 's1-s2'"),
        ("u:r:t:s0 ", "whitespace"),
        ("u :r:t:s0", "whitespace"),
        ("u:r:t:s0\\", r"contains \\"),
        ('u:r:t:s0"', 'contains "'),
        ("u:r:t:s0;reboot", "contains ;"),
        ("u:r:t:s\u0663", "outside printable ASCII"),  # an Arabic-Indic digit three
        ("u:r:t\u200b:s0", "outside printable ASCII"),  # zero-width space
        ("u:r:t:s0\x00", "outside printable ASCII"),
        ("a:b:c:d:s0", "sensitivity 'd'"),
    ],
)
def test_invalid_labels_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        SELinuxLabel.parse(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        (L1, L1),
        ("u:r:t:s0:c1,c2", "u:r:t:s0:c1,c2"),
        ("u:r:t:s0:c2,c1", "u:r:t:s0:c1,c2"),
        ("u:r:t:s0:c0,c1,c2", "u:r:t:s0:c0.c2"),
        ("u:r:t:s0:c0.c2,c3,c9", "u:r:t:s0:c0.c3,c9"),
        ("u:r:t:s0:c5,c5", "u:r:t:s0:c5"),
        ("u:r:t:s0:c0.c1", "u:r:t:s0:c0,c1"),
        ("u:r:t:s0-s0", "u:r:t:s0"),
        ("u:r:t:s0:c1-s0:c1", "u:r:t:s0:c1"),
        ("u:r:t:s0-s0:c0.c1023", "u:r:t:s0-s0:c0.c1023"),
        ("u:r:t:s0-s2:c0,c1,c2,c4,c5", "u:r:t:s0-s2:c0.c2,c4,c5"),
    ],
)
def test_canonical_form_matches_the_kernel(text: str, canonical: str) -> None:
    assert SELinuxLabel.parse(text).canonical() == canonical


def test_same_label_compares_canonical_forms() -> None:
    assert same_label("u:r:t:s0:c0,c1,c2", "u:r:t:s0:c0.c2")
    assert not same_label("u:r:t:s0:c0,c1", "u:r:t:s0:c0,c2")
    assert not same_label(L1, L2)
    assert same_label(None, None)
    assert not same_label(None, L1)
    assert not same_label(L1, None)
    assert same_label("not a label", "not a label")


_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,12}(\.[A-Za-z0-9_-]{1,5})?", fullmatch=True)


@st.composite
def _labels(draw: st.DrawFn) -> str:
    sens = draw(st.integers(0, 15))
    cats = draw(st.lists(st.integers(0, 1023), max_size=6))
    level = f"s{sens}" + (":" + ",".join(f"c{c}" for c in cats) if cats else "")
    return f"{draw(_names)}:{draw(_names)}:{draw(_names)}:{level}"


@given(_labels())
def test_any_valid_label_survives_the_kubelet_round_trip(text: str) -> None:
    label = SELinuxLabel.parse(text)
    assert str(label) == text
    flags = parse_mount_flags([f'context="{text}"'])
    assert flags.context == label
    assert flags.selinux_options() == [f'context="{text}"']
    # Unquoted gives the same label: the value is never split on its commas.
    assert parse_mount_flags([f"context={text}"]).context == label
    canonical = label.canonical()
    assert SELinuxLabel.parse(canonical).canonical() == canonical


# ---------------------------------------------------------------------------------------------
# mount flags


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
    with pytest.raises(InvalidArgument, match=message) as info:
        parse_mount_flags(flags)
    assert "mount flag" in info.value.message


def test_error_names_the_flag_with_hostile_characters_escaped() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_mount_flags([f'context="{L1}\x00\n"'])
    message = info.value.message
    assert "\x00" not in message
    assert "\n" not in message
    assert "\\x00" in message
    assert "container_file_t" in message


def test_error_for_a_very_long_flag_is_short() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_mount_flags(["y" * 100_000])
    assert len(info.value.message) < 300
    assert "100000 characters" in info.value.message


@pytest.mark.parametrize("option", sorted(FORBIDDEN_MOUNT_OPTIONS))
def test_every_forbidden_option_is_refused_alone_inside_a_list_and_with_a_value(
    option: str,
) -> None:
    for flags in ([option], [f"noatime,{option}"], [f"{option}=1"], [option.upper()]):
        with pytest.raises(InvalidArgument, match="not allowed in mount flags"):
            parse_mount_flags(flags)


def test_forbidden_list_holds_what_the_brief_requires() -> None:
    for option in (
        "bind",
        "rbind",
        "remount",
        "move",
        "make-shared",
        "make-private",
        "make-slave",
        "make-rshared",
        "make-rprivate",
        "make-rslave",
    ):
        assert option in FORBIDDEN_MOUNT_OPTIONS
    assert "defaults" not in FORBIDDEN_MOUNT_OPTIONS
    assert all(reason for reason in FORBIDDEN_MOUNT_OPTIONS.values())


# ---------------------------------------------------------------------------------------------
# context= twice: a StorageClass's mountOptions and the pod's label (kubelet appends its own last)

SVIRT = "system_u:object_r:svirt_lxc_file_t:s0:c1,c2"
CUSTOM = "staff_u:object_r:acme.volume_file_t:s0-s0:c0.c9"


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
    ("storage_class", "pod", "differ"),
    [
        (L1, L2, "level (s0:c15,c25 versus s0:c1,c2)"),
        (L2, SVIRT, "type (container_file_t versus svirt_lxc_file_t)"),
        (SVIRT, CUSTOM, "user (system_u versus staff_u) and type"),
    ],
)
def test_storage_class_context_and_another_pod_label_are_refused(
    storage_class: str, pod: str, differ: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_mount_flags(["noatime", f"context={storage_class}", f'context="{pod}"'])
    message = info.value.message
    assert f'context="{storage_class}", given first' in message
    assert f'context="{pod}", given last' in message
    assert differ in message
    assert "StorageClass" in message and "pod.spec.securityContext.seLinuxOptions" in message
    assert "seLinuxChangePolicy: Recursive" in message, "way out 1"
    assert "remove context= from the StorageClass's mountOptions" in message, "way out 2"
    assert "the driver sees only their order" in message, "it claims no more than it can know"


def test_mount_options_with_two_different_contexts_say_so() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_mount_flags([f'context="{L1}"', f'context="{L2}"', f'context="{L2}"'])
    assert "3 times with different labels" in info.value.message
    assert "may set one label at most" in info.value.message


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
    monkeypatch.setattr(selinux, "read_label", lambda path: canonical)
    verify_mounted_label("/m", ("rw", f'context="{canonical}"'), parsed.context, GOOD)
    other = L2 if type_ != "container_file_t" else SVIRT
    assert not same_label(label, other)


def test_conflict_message_names_the_field_that_differs() -> None:
    by_type = conflict_message("v", "/s", L2, SVIRT)
    assert "They differ in seLinuxOptions.type (container_file_t versus svirt_lxc_file_t)." in (
        by_type
    )
    assert "level" not in by_type.split("They differ")[1].split(".")[1], "the levels are equal"
    by_level = conflict_message("v", "/s", SVIRT, SVIRT.replace("c1,c2", "c3,c4"))
    assert "They differ in seLinuxOptions.level (s0:c1,c2 versus s0:c3,c4)." in by_level
    custom = conflict_message("v", "/s", CUSTOM, CUSTOM.replace("acme.volume_file_t", "x_t"))
    assert "seLinuxOptions.type (acme.volume_file_t versus x_t)" in custom
    assert "differ in" not in conflict_message("v", "/s", "u:r:t:s0:c0,c1,c2", "u:r:t:s0:c0.c2")


def test_stage_defaults_come_first_so_the_volumes_own_options_win() -> None:
    plain = parse_mount_flags([f'context="{L1}"']).for_stage()
    assert plain.other == ("nosuid", "nodev")
    assert plain.context == parse_mount_flags([f'context="{L1}"']).context
    explicit = parse_mount_flags(["suid,dev"]).for_stage()
    assert explicit.other == ("nosuid", "nodev", "suid,dev")


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("remount", "changes an existing mount"),
        ("bind", "bind mount"),
        ("helper=x", "unmounts the volume"),
        ("X-mount.idmap=b:0:1000:1", "ownership"),
        ('context="u:r:t:s0"', "do not belong here"),
        ("ro\nx", None),
        ('"q"', "double quote"),
        ("a\x00b", None),
    ],
)
def test_other_option_sources_get_the_same_policy(option: str, words: str | None) -> None:
    option = option.encode().decode("unicode_escape")
    with pytest.raises(InvalidArgument) as info:
        selinux.check_plain_option(option, "parameter mountOptions")
    assert info.value.message.startswith("parameter mountOptions: option")
    if words:
        assert words in info.value.message


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
        flags.context = None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("a", ["a"]),
        ("a,b", ["a", "b"]),
        (f'ro,context="{L1}",rw', ["ro", f'context="{L1}"', "rw"]),
        ("", [""]),
        (",", ["", ""]),
    ],
)
def test_split_outside_quotes(text: str, pieces: list[str]) -> None:
    assert split_outside_quotes(text) == pieces


def test_split_outside_quotes_refuses_an_open_quote() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        split_outside_quotes('a="b,c')


# ---------------------------------------------------------------------------------------------
# filesystem extras


@pytest.mark.parametrize(
    ("fs_type", "options", "labelled", "expected"),
    [
        ("nfs", ["vers=3"], True, ["vers=3", "nosharecache"]),
        ("nfs4", [], True, ["nosharecache"]),
        ("NFS4", [], True, ["nosharecache"]),
        ("cifs", ["vers=3.1.1"], True, ["vers=3.1.1", "nosharesock"]),
        ("smb3", [], True, ["nosharesock"]),
        ("nfs", ["vers=3"], False, ["vers=3"]),
        ("cifs", [], False, []),
        ("ext4", ["noatime"], True, ["noatime"]),
        ("xfs", [], True, []),
        ("", [], True, []),
        ("nfs", ["nosharecache"], True, ["nosharecache"]),
        ("nfs", ["hard,nosharecache,timeo=600"], True, ["hard,nosharecache,timeo=600"]),
        ("cifs", ["nosharesock,vers=3.0"], True, ["nosharesock,vers=3.0"]),
        # Only a whole option counts, not a substring or a quoted value.
        ("nfs", ["xnosharecache"], True, ["xnosharecache", "nosharecache"]),
        ("nfs", ['opt="a,nosharecache"'], True, ['opt="a,nosharecache"', "nosharecache"]),
        # The other filesystem's extra does not count.
        ("nfs", ["nosharesock"], True, ["nosharesock", "nosharecache"]),
        # A broken entry does not stop the extra.
        ("nfs", ['opt="a'], True, ['opt="a', "nosharecache"]),
    ],
)
def test_with_filesystem_extras(
    fs_type: str, options: list[str], labelled: bool, expected: list[str]
) -> None:
    before = list(options)
    assert with_filesystem_extras(fs_type, options, labelled) == expected
    assert options == before  # the input is not modified


# ---------------------------------------------------------------------------------------------
# mountinfo super options


@pytest.mark.parametrize(
    ("options", "label"),
    [
        (["rw", f'context="{L1}"', "seclabel"], L1),
        (["rw", "context=u:r:t:s0", "seclabel"], "u:r:t:s0"),
        (["rw", "seclabel"], None),
        ([], None),
        (["rw", 'fscontext="u:r:t:s0"', 'rootcontext="u:r:t:s0"'], None),
        (["rw", 'defcontext="u:r:t:s0"', f'context="{L2}"'], L2),
        (["context="], None),
        (['context=""'], None),
        (['context="u:r:t:s0'], '"u:r:t:s0'),
    ],
)
def test_label_from_super_options(options: list[str], label: str | None) -> None:
    assert label_from_super_options(options) == label


# ---------------------------------------------------------------------------------------------
# messages


def test_conflict_message_names_volume_place_and_both_labels() -> None:
    message = conflict_message("vol-1", "/var/lib/kubelet/plugins/x/globalmount", L1, L2)
    assert message.startswith(
        f"volume vol-1 is mounted on this node at /var/lib/kubelet/plugins/x/globalmount "
        f"with SELinux context {L1}; this pod needs context {L2}."
    )
    assert "pod.spec.securityContext.seLinuxOptions" in message
    assert "seLinuxChangePolicy: Recursive" in message


def test_conflict_message_without_labels() -> None:
    have_none = conflict_message("v", "/s", None, L2)
    assert "at /s without an SELinux context; this pod needs context " + L2 in have_none
    want_none = conflict_message("v", "/s", L1, None)
    assert f"with SELinux context {L1}; this pod needs it without an SELinux context" in want_none
    assert "None" not in have_none + want_none


# ---------------------------------------------------------------------------------------------
# read_label


def test_read_label_strips_the_nul(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str, bool]] = []

    def fake(path: str, name: str, *, follow_symlinks: bool = True) -> bytes:
        seen.append((path, name, follow_symlinks))
        return (L1 + "\0").encode()

    monkeypatch.setattr("csi_hostpath_selinux.selinux.os.getxattr", fake)
    assert selinux.read_label("/x") == L1
    assert seen == [("/x", "security.selinux", False)]


@pytest.mark.parametrize("code", [errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP])
def test_read_label_is_none_without_a_label(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def fake(path: str, name: str, *, follow_symlinks: bool = True) -> bytes:
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr("csi_hostpath_selinux.selinux.os.getxattr", fake)
    assert selinux.read_label("/x") is None


@pytest.mark.parametrize("code", [errno.ENOENT, errno.EACCES])
def test_read_label_raises_for_a_wrong_path(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def fake(path: str, name: str, *, follow_symlinks: bool = True) -> bytes:
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr("csi_hostpath_selinux.selinux.os.getxattr", fake)
    with pytest.raises(OSError) as info:
        selinux.read_label("/x")
    assert info.value.errno == code


def test_read_label_does_not_follow_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    try:
        os.setxattr(target, "security.selinux", (L1 + "\0").encode())
    except OSError as exc:
        pytest.skip(f"cannot set security.selinux here: {exc}")
    assert selinux.read_label(str(target)) == L1
    assert selinux.read_label(str(link)) != L1


# ---------------------------------------------------------------------------------------------
# probe_support on fake trees

SELINUXFS_RW = (
    "40 22 0:21 / /sys/fs/selinux rw,nosuid,noexec,relatime shared:12 - selinuxfs selinuxfs rw"
)
SELINUXFS_RO = "40 22 0:21 / /sys/fs/selinux ro,nosuid,noexec,relatime - selinuxfs selinuxfs rw"
SELINUXFS_SB_RO = "40 22 0:21 / /sys/fs/selinux rw,relatime - selinuxfs selinuxfs ro"
OTHER_MOUNTS = [
    "22 1 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
    "1 0 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw",
    "23 1 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw",
]


def _tree(
    root: Path,
    *,
    mounts: list[str] | None = None,
    lsm: str | None = None,
    attr_current: str | None = None,
    enforce: str | None = None,
    config: bool = False,
) -> str:
    (root / "proc/self/attr").mkdir(parents=True)
    (root / "sys/fs/selinux").mkdir(parents=True)
    (root / "sys/kernel/security").mkdir(parents=True)
    (root / "etc/selinux").mkdir(parents=True)
    (root / "proc/self/mountinfo").write_text("\n".join([*OTHER_MOUNTS, *(mounts or [])]) + "\n")
    if lsm is not None:
        (root / "sys/kernel/security/lsm").write_text(lsm)
    if attr_current is not None:
        (root / "proc/self/attr/current").write_text(attr_current)
    if enforce is not None:
        (root / "sys/fs/selinux/enforce").write_text(enforce)
    if config:
        (root / "etc/selinux/config").write_text("SELINUX=enforcing\nSELINUXTYPE=targeted\n")
    return str(root)


def test_probe_selinux_off(tmp_path: Path) -> None:
    root = _tree(
        tmp_path, lsm="lockdown,capability,landlock,yama,apparmor,bpf", attr_current="unconfined\n"
    )
    support = probe_support(root)
    assert support == SELinuxSupport(False, False, False, False, None, support.evidence)
    assert "lsm" in support.evidence
    assert not support.util_linux_keeps_options
    assert support.problems() == []
    assert "disabled" in support.describe()[0]


def test_probe_enabled_and_visible_read_write(tmp_path: Path) -> None:
    root = _tree(
        tmp_path, mounts=[SELINUXFS_RW], lsm="capability,selinux,bpf", enforce="1", config=True
    )
    support = probe_support(root)
    assert support.kernel_enabled
    assert support.selinuxfs_mounted
    assert support.selinuxfs_writable
    assert support.config_present
    assert support.enforcing is True
    assert support.util_linux_keeps_options
    assert support.problems() == []
    lines = support.describe()
    assert "enabled" in lines[0]
    assert "enforcing" in lines[0]
    assert any("read-write" in line for line in lines)
    assert any("keep SELinux mount options" in line for line in lines)


def test_probe_permissive_mode(tmp_path: Path) -> None:
    root = _tree(tmp_path, mounts=[SELINUXFS_RW], enforce="0", config=True)
    support = probe_support(root)
    assert support.kernel_enabled
    assert support.evidence.startswith("selinuxfs")
    assert support.enforcing is False
    assert "permissive" in support.describe()[0]


def test_probe_enabled_but_selinuxfs_hidden(tmp_path: Path) -> None:
    root = _tree(tmp_path, attr_current="system_u:system_r:container_t:s0:c1,c2\0", config=True)
    support = probe_support(root)
    assert support.kernel_enabled
    assert support.evidence == "/proc/self/attr/current"
    assert not support.selinuxfs_mounted
    assert not support.selinuxfs_writable
    assert support.enforcing is None
    assert not support.util_linux_keeps_options
    problems = support.problems()
    assert len(problems) == 1
    assert "/sys/fs/selinux is not visible to the driver" in problems[0]
    assert "read-write" in problems[0]
    assert "mode unknown" in support.describe()[0]


def test_probe_hidden_selinuxfs_found_through_the_selinux_attr_dir(tmp_path: Path) -> None:
    root = _tree(tmp_path, attr_current="unconfined")  # AppArmor speaking first (LSM stacking)
    (tmp_path / "proc/self/attr/selinux").mkdir()
    (tmp_path / "proc/self/attr/selinux/current").write_text("system_u:system_r:spc_t:s0\0")
    support = probe_support(root)
    assert support.kernel_enabled
    assert support.evidence == "/proc/self/attr/selinux/current"


def test_probe_hidden_selinuxfs_found_through_the_proc_label(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    try:
        os.setxattr(tmp_path / "proc", "security.selinux", b"system_u:object_r:proc_t:s0\0")
    except OSError as exc:
        pytest.skip(f"cannot set security.selinux here: {exc}")
    support = probe_support(root)
    assert support.kernel_enabled
    assert "xattr" in support.evidence


def test_probe_ignores_a_stale_label_on_the_root(tmp_path: Path) -> None:
    root = _tree(tmp_path, attr_current="unconfined")
    try:
        os.setxattr(tmp_path, "security.selinux", b"system_u:object_r:root_t:s0\0")
    except OSError as exc:
        pytest.skip(f"cannot set security.selinux here: {exc}")
    assert not probe_support(root).kernel_enabled


def test_probe_lsm_list_decides_over_other_signals(tmp_path: Path) -> None:
    root = _tree(
        tmp_path, lsm="capability,apparmor\n", attr_current="system_u:system_r:container_t:s0"
    )
    assert not probe_support(root).kernel_enabled
    (tmp_path / "sys/kernel/security/lsm").write_text("capability,selinux\n")
    assert probe_support(root).kernel_enabled


@pytest.mark.parametrize("line", [SELINUXFS_RO, SELINUXFS_SB_RO])
def test_probe_selinuxfs_read_only(tmp_path: Path, line: str) -> None:
    root = _tree(tmp_path, mounts=[line], enforce="1", config=True)
    support = probe_support(root)
    assert support.kernel_enabled
    assert support.selinuxfs_mounted
    assert not support.selinuxfs_writable
    assert not support.util_linux_keeps_options
    assert support.enforcing is True
    problems = support.problems()
    assert len(problems) == 1
    assert "read-only" in problems[0]
    assert any("read-only" in line for line in support.describe())


def test_probe_config_missing(tmp_path: Path) -> None:
    root = _tree(tmp_path, mounts=[SELINUXFS_RW], lsm="selinux", enforce="1")
    support = probe_support(root)
    assert support.kernel_enabled
    assert support.selinuxfs_writable
    assert not support.config_present
    assert not support.util_linux_keeps_options
    problems = support.problems()
    assert len(problems) == 1
    assert "/etc/selinux/config is missing" in problems[0]
    assert any("drop SELinux mount options" in line for line in support.describe())


def test_probe_later_mount_covers_selinuxfs(tmp_path: Path) -> None:
    covered = "41 40 0:30 / /sys/fs/selinux rw,relatime - tmpfs tmpfs rw"
    root = _tree(tmp_path, mounts=[SELINUXFS_RW, covered], lsm="selinux", config=True)
    support = probe_support(root)
    assert support.kernel_enabled
    assert not support.selinuxfs_mounted
    assert not support.util_linux_keeps_options


def test_probe_selinuxfs_elsewhere_does_not_count(tmp_path: Path) -> None:
    elsewhere = "40 22 0:21 / /host/sys/fs/selinux rw - selinuxfs selinuxfs rw"
    root = _tree(tmp_path, mounts=[elsewhere], lsm="selinux", config=True)
    assert not probe_support(root).selinuxfs_mounted


@pytest.mark.parametrize("value", ["", "2", "enforcing", "\0"])
def test_probe_odd_enforce_file_is_unknown(tmp_path: Path, value: str) -> None:
    root = _tree(tmp_path, mounts=[SELINUXFS_RW], enforce=value, config=True)
    assert probe_support(root).enforcing is None


def test_probe_survives_garbage(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        mounts=["garbage", "", "1 2 3 4 /sys/fs/selinux rw - ", "\\777 \xff x", " - - - - -"],
        attr_current="\xff\xfe not a context",
    )
    (tmp_path / "sys/kernel/security/lsm").mkdir()  # unreadable as a file
    support = probe_support(root)
    assert support == SELinuxSupport(False, False, False, False, None, support.evidence)


def test_probe_of_a_missing_root_is_all_false(tmp_path: Path) -> None:
    support = probe_support(str(tmp_path / "nowhere"))
    assert not support.kernel_enabled
    assert not support.selinuxfs_mounted
    assert not support.config_present
    assert support.enforcing is None


# ---------------------------------------------------------------------------------------------
# verify_mounted_label

GOOD = SELinuxSupport(True, True, True, True, True)
DROPPING = SELinuxSupport(True, False, False, True, None)
OFF = SELinuxSupport(False, False, False, False, None)


def _label_on_disk(monkeypatch: pytest.MonkeyPatch, label: str | None) -> None:
    monkeypatch.setattr(selinux, "read_label", lambda path: label)


def test_verify_accepts_the_expected_label(monkeypatch: pytest.MonkeyPatch) -> None:
    _label_on_disk(monkeypatch, L1)
    verify_mounted_label("/m", ["rw", f'context="{L1}"', "seclabel"], _ctx(L1), GOOD)


def test_verify_accepts_the_kernels_canonical_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    _label_on_disk(monkeypatch, "u:r:t:s0:c0.c2")
    verify_mounted_label("/m", ['context="u:r:t:s0:c0.c2"'], _ctx("u:r:t:s0:c0,c1,c2"), GOOD)


@pytest.mark.parametrize(
    ("support", "cause"),
    [
        (DROPPING, "not mounted read-write in the driver's container.*util-linux dropped"),
        (OFF, "disabled"),
        (GOOD, "dropped on the way to the kernel"),
    ],
)
def test_verify_refuses_a_dropped_option(
    monkeypatch: pytest.MonkeyPatch, support: SELinuxSupport, cause: str
) -> None:
    _label_on_disk(monkeypatch, "system_u:object_r:unlabeled_t:s0")
    with pytest.raises(LabelVerificationError, match=cause) as info:
        verify_mounted_label("/m", ["rw", "seclabel"], _ctx(L1), support)
    assert "/m" in info.value.message
    assert L1 in info.value.message
    assert "rw,seclabel" in info.value.message


def test_verify_refuses_another_label_in_mountinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    _label_on_disk(monkeypatch, L2)
    with pytest.raises(LabelVerificationError) as info:
        verify_mounted_label("/m", ["rw", f'context="{L2}"'], _ctx(L1), GOOD)
    assert L1 in info.value.message
    assert L2 in info.value.message


def test_verify_does_not_match_a_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    _label_on_disk(monkeypatch, "u:r:t:s0:c1")
    with pytest.raises(LabelVerificationError):
        verify_mounted_label("/m", ['context="u:r:t:s0:c1,c2"'], _ctx("u:r:t:s0:c1"), GOOD)


@pytest.mark.parametrize("on_disk", [L2, None, "system_u:object_r:unlabeled_t:s0"])
def test_verify_refuses_a_root_with_another_label(
    monkeypatch: pytest.MonkeyPatch, on_disk: str | None
) -> None:
    _label_on_disk(monkeypatch, on_disk)
    with pytest.raises(LabelVerificationError, match="mount table, but its root") as info:
        verify_mounted_label("/m", [f'context="{L1}"'], _ctx(L1), GOOD)
    assert L1 in info.value.message
    if on_disk:
        assert on_disk in info.value.message


def test_verify_reports_an_unreadable_root(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: str) -> str | None:
        raise OSError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(selinux, "read_label", broken)
    with pytest.raises(LabelVerificationError, match="cannot be read: Permission denied"):
        verify_mounted_label("/m", [f'context="{L1}"'], _ctx(L1), GOOD)
