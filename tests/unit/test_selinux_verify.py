"""csi_hostpath_selinux.selinux.verify: a mount's label read back from mountinfo and its root."""

from __future__ import annotations

import errno

import pytest

from csi_hostpath_selinux.selinux import xattr
from csi_hostpath_selinux.selinux.errors import LabelNotApplied
from csi_hostpath_selinux.selinux.labels import SELinuxLabel
from csi_hostpath_selinux.selinux.probe import SELinuxSupport
from csi_hostpath_selinux.selinux.verify import label_from_super_options, verify_mounted_label

L1 = "system_u:object_r:container_file_t:s0:c15,c25"
L2 = "system_u:object_r:container_file_t:s0:c1,c2"


def _ctx(text: str) -> SELinuxLabel:
    return SELinuxLabel.parse(text)


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


GOOD = SELinuxSupport(True, True, True, True, True)
DROPPING = SELinuxSupport(True, False, False, True, None)
OFF = SELinuxSupport(False, False, False, False, None)


def _label_on_disk(monkeypatch: pytest.MonkeyPatch, label: str | None) -> None:
    monkeypatch.setattr(xattr, "read_label", lambda path: label)


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
    with pytest.raises(LabelNotApplied, match=cause) as info:
        verify_mounted_label("/m", ["rw", "seclabel"], _ctx(L1), support)
    assert "/m" in info.value.message
    assert L1 in info.value.message
    assert "rw,seclabel" in info.value.message


def test_verify_refuses_another_label_in_mountinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    _label_on_disk(monkeypatch, L2)
    with pytest.raises(LabelNotApplied) as info:
        verify_mounted_label("/m", ["rw", f'context="{L2}"'], _ctx(L1), GOOD)
    assert L1 in info.value.message
    assert L2 in info.value.message


def test_verify_does_not_match_a_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    _label_on_disk(monkeypatch, "u:r:t:s0:c1")
    with pytest.raises(LabelNotApplied):
        verify_mounted_label("/m", ['context="u:r:t:s0:c1,c2"'], _ctx("u:r:t:s0:c1"), GOOD)


@pytest.mark.parametrize("on_disk", [L2, None, "system_u:object_r:unlabeled_t:s0"])
def test_verify_refuses_a_root_with_another_label(
    monkeypatch: pytest.MonkeyPatch, on_disk: str | None
) -> None:
    _label_on_disk(monkeypatch, on_disk)
    with pytest.raises(LabelNotApplied, match="mount table, but its root") as info:
        verify_mounted_label("/m", [f'context="{L1}"'], _ctx(L1), GOOD)
    assert L1 in info.value.message
    if on_disk:
        assert on_disk in info.value.message


def test_verify_reports_an_unreadable_root(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: str) -> str | None:
        raise OSError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(xattr, "read_label", broken)
    with pytest.raises(LabelNotApplied, match="cannot be read: Permission denied"):
        verify_mounted_label("/m", [f'context="{L1}"'], _ctx(L1), GOOD)
