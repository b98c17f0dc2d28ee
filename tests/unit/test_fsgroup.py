"""fsGroup ownership changes: what kubelet would do, without following symlinks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from csi_hostpath_selinux import fsgroup
from csi_hostpath_selinux.errors import InvalidArgument


def test_apply_sets_group_modes_and_never_follows_links(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's group to an arbitrary gid needs root")
    outside = tmp_path / "outside"
    outside.write_text("not part of the volume")
    before = os.stat(outside)
    vol = tmp_path / "vol"
    (vol / "sub").mkdir(parents=True)
    (vol / "sub" / "file").write_text("data")
    os.chmod(vol / "sub" / "file", 0o600)
    (vol / "link").symlink_to(outside)
    assert fsgroup.apply(str(vol), 2345) == 4
    assert os.stat(vol / "sub" / "file").st_gid == 2345
    assert stat.S_IMODE(os.stat(vol / "sub" / "file").st_mode) == 0o660
    assert os.stat(vol / "sub").st_mode & stat.S_ISGID
    assert os.lstat(vol / "link").st_gid == 2345
    after = os.stat(outside)
    assert (after.st_gid, after.st_mode) == (before.st_gid, before.st_mode)
    assert fsgroup.apply(str(vol), 2345) == 0, "a volume already done costs one stat"


@pytest.mark.parametrize("bad", ["", "abc", "-1", "1.5", "99999999999", "4294967295"])
def test_bad_groups_are_invalid(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        fsgroup.parse_gid(bad)
