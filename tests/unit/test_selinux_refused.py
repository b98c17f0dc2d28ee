"""csi_hostpath_selinux.selinux.refused: the options refused from every source."""

from __future__ import annotations

import pytest

from csi_hostpath_selinux.selinux.errors import InvalidMountFlags
from csi_hostpath_selinux.selinux.options import parse_mount_flags
from csi_hostpath_selinux.selinux.refused import FORBIDDEN_MOUNT_OPTIONS, check_plain_option


@pytest.mark.parametrize("option", sorted(FORBIDDEN_MOUNT_OPTIONS))
def test_every_forbidden_option_is_refused_alone_inside_a_list_and_with_a_value(
    option: str,
) -> None:
    for flags in ([option], [f"noatime,{option}"], [f"{option}=1"], [option.upper()]):
        with pytest.raises(InvalidMountFlags, match="not allowed in mount flags"):
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
    with pytest.raises(InvalidMountFlags) as info:
        check_plain_option(option, "parameter mountOptions")
    assert info.value.message.startswith("parameter mountOptions: option")
    if words:
        assert words in info.value.message
