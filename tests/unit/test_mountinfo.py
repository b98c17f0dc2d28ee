"""Pure logic of csi_hostpath_selinux.mounts: mountinfo parsing, option splitting, path matching,
and the FakeMounter that higher layers test against."""

from __future__ import annotations

import pytest

from csi_hostpath_selinux.fake_mounts import FakeMounter
from csi_hostpath_selinux.mount_options import MountError, split_options
from csi_hostpath_selinux.mountinfo import (
    MountEntry,
    find_mount,
    parse_mountinfo,
    parse_mountinfo_line,
    read_mountinfo,
    split_outside_quotes,
)
from csi_hostpath_selinux.syscalls import (
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_RELATIME,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
)

L1 = "system_u:object_r:container_file_t:s0:c1,c2"

# fmt: off
PARSE_CASES = [
    pytest.param(
        "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        MountEntry(36, 35, 98, 0, "/mnt1", "/mnt2", ("rw", "noatime"), ("master:1",), "ext3",
                   "/dev/root", ("rw", "errors=continue")),
        id="proc5-example",
    ),
    pytest.param(
        "22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw",
        MountEntry(22, 1, 0, 21, "/", "/sys", ("rw", "nosuid", "nodev", "noexec", "relatime"), (),
                   "sysfs", "sysfs", ("rw",)),
        id="no-optional-fields",
    ),
    pytest.param(
        "100 30 7:3 / /var/lib/kubelet/pods/x/volumes/my\\040vol rw,relatime shared:5 master:2 "
        "propagate_from:1 unbindable - ext4 /dev/loop3 rw",
        MountEntry(100, 30, 7, 3, "/", "/var/lib/kubelet/pods/x/volumes/my vol", ("rw", "relatime"),
                   ("shared:5", "master:2", "propagate_from:1", "unbindable"), "ext4",
                   "/dev/loop3", ("rw",)),
        id="escaped-space-many-optional-fields",
    ),
    pytest.param(
        "101 30 0:50 / /mnt/tab\\011and\\134back\\012nl ro,relatime - tmpfs my\\040src ro,size=4k",
        MountEntry(101, 30, 0, 50, "/", "/mnt/tab\tand\\back\nnl", ("ro", "relatime"), (), "tmpfs",
                   "my src", ("ro", "size=4k")),
        id="tab-backslash-newline-and-escaped-source",
    ),
    pytest.param(
        f'200 30 7:5 / /staging rw,relatime shared:9 - ext4 /dev/loop5 rw,context="{L1}",seclabel',
        MountEntry(200, 30, 7, 5, "/", "/staging", ("rw", "relatime"), ("shared:9",), "ext4",
                   "/dev/loop5", ("rw", f'context="{L1}"', "seclabel")),
        id="quoted-context-with-comma",
    ),
    pytest.param(
        "300 30 253:1 /volumes/vol-1 /var/lib/kubelet/pods/p/volumes/v/mount ro,nosuid "
        "shared:1 - xfs /dev/mapper/root rw,attr2,inode64",
        MountEntry(300, 30, 253, 1, "/volumes/vol-1", "/var/lib/kubelet/pods/p/volumes/v/mount",
                   ("ro", "nosuid"), ("shared:1",), "xfs", "/dev/mapper/root",
                   ("rw", "attr2", "inode64")),
        id="bind-mount-root-field",
    ),
    pytest.param(
        "400 30 0:60 / /mnt/empty-src rw - tmpfs  rw",
        MountEntry(400, 30, 0, 60, "/", "/mnt/empty-src", ("rw",), (), "tmpfs", "", ("rw",)),
        id="empty-source",
    ),
    pytest.param(
        "401 30 0:61 / /mnt/sshfs rw - fuse.sshfs user@host:/a rw,user_id=0",
        MountEntry(401, 30, 0, 61, "/", "/mnt/sshfs", ("rw",), (), "fuse.sshfs", "user@host:/a",
                   ("rw", "user_id=0")),
        id="fuse-subtype",
    ),
]
# fmt: on


@pytest.mark.parametrize(("line", "expected"), PARSE_CASES)
def test_parse_mountinfo_line(line: str, expected: MountEntry) -> None:
    assert parse_mountinfo_line(line) == expected


def test_parse_mountinfo_keeps_order_and_skips_blank_lines() -> None:
    text = "\n".join(str(p.values[0]) for p in PARSE_CASES) + "\n\n"
    entries = parse_mountinfo(text)
    assert [e.mount_id for e in entries] == [36, 22, 100, 101, 200, 300, 400, 401]


@pytest.mark.parametrize(
    "line",
    [
        "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw",  # no separator
        "36 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root",  # missing super options
        "x 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root rw",  # bad id
        "36 35 98-0 /mnt1 /mnt2 rw - ext3 /dev/root rw",  # bad device
    ],
)
def test_parse_mountinfo_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError, match="mountinfo line"):
        parse_mountinfo_line(line)


def test_a_dash_in_the_optional_fields_position_is_the_separator_not_a_path() -> None:
    # A mount point named "-" is escaped by nothing, but it sits in field 5, before the search.
    entry = parse_mountinfo_line("5 1 0:1 / /- rw - tmpfs - rw")
    assert entry.mount_point == "/-"
    assert entry.source == "-"
    assert entry.optional_fields == ()


@pytest.mark.parametrize(
    ("mount_opts", "super_opts", "read_only"),
    [("rw,relatime", "rw", False), ("ro,relatime", "rw", True), ("rw", "ro", True)],
)
def test_read_only(mount_opts: str, super_opts: str, read_only: bool) -> None:
    entry = parse_mountinfo_line(f"1 0 0:1 / /m {mount_opts} - ext4 /dev/x {super_opts}")
    assert entry.read_only is read_only


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("a,b", ["a", "b"]),
        (f'rw,context="{L1}",seclabel', ["rw", f'context="{L1}"', "seclabel"]),
        ('a="x,y",b="p,q"', ['a="x,y"', 'b="p,q"']),
        ("a,,b,", ["a", "b"]),
        ("", []),
    ],
)
def test_split_outside_quotes(text: str, parts: list[str]) -> None:
    assert split_outside_quotes(text) == parts


# fmt: off
SPLIT_CASES = [
    ([], 0, ""),
    (["defaults"], 0, ""),
    (["ro"], MS_RDONLY, ""),
    (["ro", "rw"], 0, ""),
    (["rw", "ro"], MS_RDONLY, ""),
    (["nosuid", "nodev", "noexec"], MS_NOSUID | MS_NODEV | MS_NOEXEC, ""),
    (["nosuid", "suid", "dev", "exec"], 0, ""),
    (["sync", "dirsync", "lazytime", "mand"],
     MS_SYNCHRONOUS | MS_DIRSYNC | MS_LAZYTIME | MS_MANDLOCK, ""),
    (["sync", "async", "mand", "nomand"], 0, ""),
    (["noatime"], MS_NOATIME, ""),
    (["noatime", "relatime"], MS_RELATIME, ""),
    (["relatime", "strictatime"], MS_STRICTATIME, ""),
    (["strictatime", "noatime", "nodiratime"], MS_NOATIME | MS_NODIRATIME, ""),
    (["noatime", "atime"], 0, ""),
    (["relatime", "norelatime", "nodiratime", "diratime"], 0, ""),
    (["errors=remount-ro"], 0, "errors=remount-ro"),
    ([f'context="{L1}"'], 0, f'context="{L1}"'),
    (["ro", f'context="{L1}"', "noatime"], MS_RDONLY | MS_NOATIME, f'context="{L1}"'),
    ([f'context="{L1}",noatime'], MS_NOATIME, f'context="{L1}"'),
    (["nosuid,nodev"], MS_NOSUID | MS_NODEV, ""),
    (["vers=4.2,hard", "nosharecache"], 0, "vers=4.2,hard,nosharecache"),
    (["data=ordered", "ro,commit=5"], MS_RDONLY, "data=ordered,commit=5"),
    # an unquoted level keeps its pieces in order: data reads exactly like the entry
    (["context=system_u:object_r:t:s0:c1,c2"], 0, "context=system_u:object_r:t:s0:c1,c2"),
    (['defcontext="u:r:t:s0:c1,c2"', 'rootcontext="u:r:t:s0"'], 0,
     'defcontext="u:r:t:s0:c1,c2",rootcontext="u:r:t:s0"'),
]
# fmt: on


@pytest.mark.parametrize(("options", "flags", "data"), SPLIT_CASES)
def test_split_options(options: list[str], flags: int, data: str) -> None:
    assert split_options(options) == (flags, data)


def table(*mount_points: str) -> list[MountEntry]:
    return [
        MountEntry(i + 1, 1, 0, i, "/", mp, ("rw",), (), "ext4", f"/dev/loop{i}", ("rw",))
        for i, mp in enumerate(mount_points)
    ]


PODS = "/var/lib/kubelet/pods"


def test_find_mount_matches_the_whole_path_only() -> None:
    entries = table("/", f"{PODS}/vol-10", f"{PODS}/vol-1/x")
    assert find_mount(f"{PODS}/vol-1", entries) is None
    assert find_mount(f"{PODS}/vol", entries) is None
    found = find_mount(f"{PODS}/vol-10", entries)
    assert found is not None
    assert found.mount_point == f"{PODS}/vol-10"


def test_find_mount_returns_the_topmost_of_stacked_mounts() -> None:
    entries = table("/", "/a", "/a/b", "/a")
    found = find_mount("/a", entries)
    assert found is not None
    assert found.mount_id == 4


def test_find_mount_ignores_a_trailing_slash_and_finds_root() -> None:
    entries = table("/", "/a")
    assert find_mount("/a/", entries) == entries[1]
    assert find_mount("/", entries) == entries[0]


def test_real_mountinfo_parses_and_has_root() -> None:
    entries = read_mountinfo()
    assert find_mount("/", entries) is not None


def test_mount_error_carries_errno() -> None:
    err = MountError("boom", 16)
    assert err.errno == 16
    assert err.message == "boom"
    assert str(err) == "boom"
    assert MountError("no errno").errno is None


def test_fake_mounter_records_and_tracks_mounts() -> None:
    fake = FakeMounter()
    fake.mount("/dev/loop1", "/stage", "ext4", ["noatime", f'context="{L1}"'])
    fake.bind("/stage", "/target", read_only=True, extra_flags=["nosuid"])
    assert fake.mount_at("/stage") is not None
    assert fake.mount_at("/target/") is not None
    assert fake.mount_at("/targ") is None
    entries = fake.entries()
    staged = find_mount("/stage", entries)
    published = find_mount("/target", entries)
    assert staged is not None
    assert published is not None
    assert f'context="{L1}"' in staged.super_options
    assert not staged.read_only
    assert published.read_only
    assert published.fs_type == "ext4"
    # A bind shares its source's device and root; another mount has a device of its own.
    assert (published.major, published.minor, published.root) == (
        staged.major,
        staged.minor,
        staged.root,
    )
    fake.mount("/dev/loop2", "/other", "ext4", [])
    other = find_mount("/other", fake.entries())
    assert other is not None and (other.major, other.minor) != (staged.major, staged.minor)
    fake.unmount("/target")
    fake.unmount("/target")  # not mounted: no error, like the real one
    assert fake.mount_at("/target") is None
    assert [c[0] for c in fake.calls] == ["mount", "bind", "mount", "unmount", "unmount"]


def test_fake_mounter_queued_failure_is_raised_once() -> None:
    fake = FakeMounter()
    fake.fail("mount", MountError("busy", 16))
    with pytest.raises(MountError) as info:
        fake.mount("/dev/loop1", "/stage", "ext4", [])
    assert info.value.errno == 16
    assert fake.mount_at("/stage") is None
    fake.mount("/dev/loop1", "/stage", "ext4", [])
    assert fake.mount_at("/stage") is not None


def test_bind_refuses_filesystem_options() -> None:
    fake = FakeMounter()
    with pytest.raises(MountError) as info:
        fake.bind("/a", "/b", extra_flags=["errors=remount-ro"])
    assert info.value.errno == 22
    assert fake.mount_at("/b") is None
