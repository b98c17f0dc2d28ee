"""csi_hostpath_selinux.selinux.mountinfo: the package's mountinfo parser, which the probe uses
and which parses exactly as the driver's mount table (mountinfo.py) does, so that the mount table can
take it (and the package's splitter) instead of its own copy."""

from __future__ import annotations

import pytest

from csi_hostpath_selinux import mountinfo as driver_mountinfo
from csi_hostpath_selinux.selinux.mountinfo import (
    MountInfoEntry,
    parse_mountinfo,
    parse_mountinfo_line,
)
from csi_hostpath_selinux.selinux.split import split_kernel_options

L1 = "system_u:object_r:container_file_t:s0:c1,c2"

LINES = [
    "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
    "22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw",
    "100 30 7:3 / /var/lib/kubelet/pods/x/volumes/my\\040vol rw,relatime shared:5 master:2 "
    "propagate_from:1 unbindable - ext4 /dev/loop3 rw",
    "101 30 0:50 / /mnt/tab\\011and\\134back\\012nl ro,relatime - tmpfs my\\040src ro,size=4k",
    f'200 30 7:5 / /staging rw,relatime shared:9 - ext4 /dev/loop5 rw,context="{L1}",seclabel',
    "400 30 0:60 / /mnt/empty-src rw - tmpfs  rw",
    "5 1 0:1 / /- rw - tmpfs - rw",
    "40 22 0:21 / /sys/fs/selinux ro,nosuid,noexec,relatime - selinuxfs selinuxfs rw",
]


def test_a_labelled_mount_line() -> None:
    entry = parse_mountinfo_line(LINES[4])
    assert entry == MountInfoEntry(
        200,
        30,
        7,
        5,
        "/",
        "/staging",
        ("rw", "relatime"),
        ("shared:9",),
        "ext4",
        "/dev/loop5",
        ("rw", f'context="{L1}"', "seclabel"),
    )
    assert not entry.read_only
    assert parse_mountinfo_line(LINES[-1]).read_only


def test_the_driver_reads_mountinfo_with_this_parser_only() -> None:
    """One parser and one splitter of mountinfo: the driver's mount table takes the package's."""
    assert driver_mountinfo.parse_mountinfo_line is parse_mountinfo_line
    assert driver_mountinfo.parse_mountinfo is parse_mountinfo
    assert driver_mountinfo.split_outside_quotes is split_kernel_options


def test_a_file_keeps_order_and_skips_blank_lines() -> None:
    entries = parse_mountinfo("\n".join(LINES) + "\n\n")
    assert [e.mount_id for e in entries] == [36, 22, 100, 101, 200, 400, 5, 40]


@pytest.mark.parametrize(
    "line",
    [
        "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw",
        "36 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root",
        "x 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root rw",
        "36 35 98-0 /mnt1 /mnt2 rw - ext3 /dev/root rw",
    ],
)
def test_malformed_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError, match="mountinfo line"):
        parse_mountinfo_line(line)
