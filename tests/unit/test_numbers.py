"""Numbers in requests are ASCII digits: str.isdigit() also accepts '²' or '٣', which int() then
rejects or reads, so a token, a group id or a size written with them must be refused plainly.

Found by the rotating-seed fuzz run: ListVolumes/ControllerListVolumeHealth with starting_token
"²" answered INTERNAL ("invalid literal for int()")."""

from __future__ import annotations

import pytest

from csi_hostpath_selinux.errors import Aborted, InvalidArgument
from csi_hostpath_selinux.fsgroup import parse_gid
from csi_hostpath_selinux.units import parse_size
from csi_hostpath_selinux.volume_requests import parse_token

# superscript two, Arabic-Indic digits, a mathematical digit: isdigit() says yes to each
NOT_ASCII_DIGITS = ["\u00b2", "1\u00b2", "\u0663", "\u0661\u0662", "\U0001d7d9"]


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_a_starting_token_of_other_digits_is_not_ours(text: str) -> None:
    with pytest.raises(Aborted, match="is not a token this driver handed out"):
        parse_token(text)


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_a_group_id_of_other_digits_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="numeric group id"):
        parse_gid(text)


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_a_size_of_other_digits_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_ascii_numbers_still_parse() -> None:
    assert parse_token("42") == 42
    assert parse_gid("1000") == 1000
    assert parse_size("10Gi") == 10 * 1024**3
