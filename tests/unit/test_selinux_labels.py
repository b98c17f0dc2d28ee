"""csi_hostpath_selinux.selinux.labels: the label grammar, canonical form and comparison."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csi_hostpath_selinux.selinux.labels import SELinuxLabel, same_label
from csi_hostpath_selinux.selinux.options import parse_mount_flags

L1 = "system_u:object_r:container_file_t:s0:c15,c25"
L2 = "system_u:object_r:container_file_t:s0:c1,c2"


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


# No wall-clock deadline: each example is a few parses of a short string (bounded by the
# strategy), and a loaded CI machine pausing the process is not a failure of the code.
@settings(deadline=None)
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
