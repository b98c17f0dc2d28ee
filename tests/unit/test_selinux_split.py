"""csi_hostpath_selinux.selinux.split: the one splitter of comma-joined options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux.backends import BackendEnv, NFSBackend
from csi_hostpath_selinux.fake_mounts import FakeMounter
from csi_hostpath_selinux.selinux.errors import InvalidMountFlags
from csi_hostpath_selinux.selinux.options import parse_mount_flags
from csi_hostpath_selinux.selinux.split import split_kernel_options, split_outside_quotes
from csi_hostpath_selinux.status import status_of

L1 = "system_u:object_r:container_file_t:s0:c15,c25"
L2 = "system_u:object_r:container_file_t:s0:c1,c2"


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


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("rw,relatime", ["rw", "relatime"]),
        (f'rw,context="{L1}",seclabel', ["rw", f'context="{L1}"', "seclabel"]),
        ("", []),
        (",a,,b,", ["a", "b"]),
        # An unclosed quote runs to the end: kernel text is never refused.
        ('a="b,c', ['a="b,c']),
    ],
)
def test_split_kernel_options(text: str, pieces: list[str]) -> None:
    assert split_kernel_options(text) == pieces


def test_the_separator_can_be_another_character() -> None:
    assert split_outside_quotes('a b="c d" e', " ") == ["a", 'b="c d"', "e"]
    assert split_kernel_options('a  b="c d"', " ") == ["a", 'b="c d"']


# ---------------------------------------------------------------------------------------------
# One splitter, one refusal: an unbalanced quote in an NFS mountOptions parameter and in mount
# flags is the same error, with the same reason, naming what was written.

UNBALANCED = 'vers=4.2,opt="a,b'


def _refusal(call: Callable[[], object]) -> InvalidMountFlags:
    with pytest.raises(InvalidMountFlags) as info:
        call()
    return info.value


def test_an_unbalanced_quote_is_refused_alike_in_mount_options_and_mount_flags(
    tmp_path: Path,
) -> None:
    nfs = NFSBackend(BackendEnv(tmp_path, FakeMounter()))
    parameters = {"server": "nfs.example", "share": "/srv", "mountOptions": UNBALANCED}
    from_parameter = _refusal(lambda: nfs.check_parameters(parameters))
    from_flags = _refusal(lambda: parse_mount_flags([UNBALANCED]))
    for error, source in ((from_parameter, "parameter mountOptions"), (from_flags, "mount flag")):
        assert error.reason == "it has an unbalanced double quote"
        assert error.option == UNBALANCED
        status = status_of("CreateVolume", error)
        assert status.code is grpc.StatusCode.INVALID_ARGUMENT
        assert status.message.startswith(source)
        assert repr(UNBALANCED) in status.message, "names what was written"
        assert "unbalanced double quote" in status.message
