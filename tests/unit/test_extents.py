"""Table tests for the byte-range arithmetic behind the SnapshotMetadata service."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csi_hostpath_selinux.extents import (
    Extent,
    Segment,
    batches,
    clip,
    coalesce,
    delta_plan,
    differing_blocks,
    intersect,
    normalize,
    subtract,
)


def E(start: int, end: int) -> Extent:
    """An extent from start to end (the tables read better as intervals)."""
    return Extent.between(start, end)


@pytest.mark.parametrize(
    ("given_extents", "expected"),
    [
        ([], []),
        ([E(0, 0)], []),
        ([E(0, 10)], [E(0, 10)]),
        ([E(10, 20), E(0, 5)], [E(0, 5), E(10, 20)]),
        ([E(0, 10), E(10, 20)], [E(0, 20)]),  # touching: merged
        ([E(0, 10), E(5, 8)], [E(0, 10)]),  # contained
        ([E(0, 10), E(5, 15), E(30, 40), E(40, 41)], [E(0, 15), E(30, 41)]),
        ([E(7, 7), E(3, 4)], [E(3, 4)]),
    ],
)
def test_normalize(given_extents: list[Extent], expected: list[Extent]) -> None:
    assert normalize(given_extents) == expected


def test_coalesce_refuses_unsorted_input() -> None:
    with pytest.raises(ValueError, match="out of order"):
        list(coalesce([E(10, 20), E(0, 5)]))


@pytest.mark.parametrize(
    ("a", "b", "both", "a_only"),
    [
        ([], [E(0, 10)], [], []),
        ([E(0, 10)], [], [], [E(0, 10)]),
        ([E(0, 10)], [E(0, 10)], [E(0, 10)], []),
        ([E(0, 10)], [E(5, 15)], [E(5, 10)], [E(0, 5)]),
        (
            [E(0, 100)],
            [E(10, 20), E(30, 40)],
            [E(10, 20), E(30, 40)],
            [E(0, 10), E(20, 30), E(40, 100)],
        ),
        ([E(10, 20), E(30, 40)], [E(0, 100)], [E(10, 20), E(30, 40)], []),
        ([E(0, 10), E(20, 30)], [E(10, 20)], [], [E(0, 10), E(20, 30)]),
        ([E(0, 4096), E(8192, 12288)], [E(4096, 8192)], [], [E(0, 4096), E(8192, 12288)]),
        ([E(5, 25)], [E(0, 10), E(20, 30)], [E(5, 10), E(20, 25)], [E(10, 20)]),
    ],
)
def test_intersect_and_subtract(
    a: list[Extent], b: list[Extent], both: list[Extent], a_only: list[Extent]
) -> None:
    assert intersect(a, b) == both
    assert intersect(b, a) == both
    assert subtract(a, b) == a_only


@pytest.mark.parametrize(
    ("extents", "start", "end", "expected"),
    [
        ([E(0, 10), E(20, 30)], 0, 100, [E(0, 10), E(20, 30)]),
        ([E(0, 10), E(20, 30)], 5, 100, [E(5, 10), E(20, 30)]),  # cut at the starting offset
        ([E(0, 10), E(20, 30)], 10, 100, [E(20, 30)]),  # nothing that ends before the offset
        ([E(0, 10), E(20, 30)], 25, 27, [E(25, 27)]),
        ([E(0, 10), E(20, 30)], 30, 30, []),
        ([E(0, 10)], 0, 4, [E(0, 4)]),  # past the capacity
    ],
)
def test_clip(extents: list[Extent], start: int, end: int, expected: list[Extent]) -> None:
    assert clip(extents, start, end) == expected


@pytest.mark.parametrize(
    ("base", "target", "expected"),
    [
        ([], [], []),
        ([], [E(0, 10)], [Segment(E(0, 10), False)]),  # written where there was a hole
        ([E(0, 10)], [], [Segment(E(0, 10), False)]),  # zeroed (a hole in the new copy)
        ([E(0, 10)], [E(0, 10)], [Segment(E(0, 10), True)]),
        (
            [E(0, 10)],
            [E(5, 20)],
            [Segment(E(0, 5), False), Segment(E(5, 10), True), Segment(E(10, 20), False)],
        ),
        (
            [E(0, 10), E(40, 50)],
            [E(20, 30), E(45, 60)],
            [
                Segment(E(0, 10), False),
                Segment(E(20, 30), False),
                Segment(E(40, 45), False),
                Segment(E(45, 50), True),
                Segment(E(50, 60), False),
            ],
        ),
    ],
)
def test_delta_plan(base: list[Extent], target: list[Extent], expected: list[Segment]) -> None:
    assert delta_plan(base, target) == expected


def block(fill: int, size: int = 4) -> bytes:
    return bytes([fill]) * size


@pytest.mark.parametrize(
    ("base", "target", "offset", "expected"),
    [
        (block(1) * 4, block(1) * 4, 0, []),
        (block(1) * 4, block(1) + block(2) + block(1) * 2, 0, [E(4, 8)]),
        (block(1) * 4, block(2) * 2 + block(1) * 2, 100, [E(100, 108)]),  # merged, offset
        (block(1) * 4, block(2) + block(1) + block(1) + block(2), 0, [E(0, 4), E(12, 16)]),
        (block(1) * 2 + b"\x01\x01", block(1) * 2 + b"\x01\x02", 0, [E(8, 10)]),  # short tail
        (b"\x00\x01\x02\x03", b"\x00\x01\x02\x04", 8, [E(8, 12)]),  # one byte: the whole block
    ],
)
def test_differing_blocks(base: bytes, target: bytes, offset: int, expected: list[Extent]) -> None:
    assert differing_blocks(base, target, offset, 4) == expected


def test_differing_blocks_needs_equal_buffers_and_a_block_size() -> None:
    with pytest.raises(ValueError, match="length"):
        differing_blocks(b"ab", b"abc", 0, 4)
    with pytest.raises(ValueError, match="block size"):
        differing_blocks(b"ab", b"ab", 0, 0)


@pytest.mark.parametrize(
    ("count", "max_results", "sizes"),
    [
        (0, 3, [0]),  # one empty message: the stream still carries the capacity
        (1, 3, [1]),
        (3, 3, [3]),
        (4, 3, [3, 1]),
        (7, 2, [2, 2, 2, 1]),
        (6, 1, [1, 1, 1, 1, 1, 1]),
    ],
)
def test_batches(count: int, max_results: int, sizes: list[int]) -> None:
    extents = [E(i * 10, i * 10 + 5) for i in range(count)]
    out = list(batches(iter(extents), max_results))
    assert [len(b) for b in out] == sizes
    assert [e for b in out for e in b] == extents


def test_batches_needs_a_positive_size() -> None:
    with pytest.raises(ValueError, match="positive"):
        list(batches([], 0))


# Property tests against a model: a set of byte positions.

ranges = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 40)).map(lambda t: Extent(t[0], t[1])),
    max_size=8,
)


def bytes_of(extents: list[Extent]) -> set[int]:
    return {b for e in extents for b in range(e.offset, e.end)}


def is_normal(extents: list[Extent]) -> bool:
    return all(e.length > 0 for e in extents) and all(
        a.end < b.offset for a, b in itertools.pairwise(extents)
    )


# No deadline: hypothesis's default (200 ms per example) times the wall clock, and on a shared
# 2-core CI machine an example that takes 0-4 ms of CPU is sometimes descheduled for longer, which
# failed the run (DeadlineExceeded / Flaky) with nothing wrong in the code. The work per example
# is bounded by the strategy instead: at most 8 extents of at most 40 bytes each side, so the
# model's byte sets hold at most 320 positions, and 100 examples run in well under a second.
@settings(deadline=None)
@given(ranges, ranges)
def test_set_operations_match_the_model(a: list[Extent], b: list[Extent]) -> None:
    na, nb = normalize(a), normalize(b)
    assert bytes_of(na) == bytes_of(a) and is_normal(na)
    both, a_only = intersect(na, nb), subtract(na, nb)
    assert bytes_of(both) == bytes_of(a) & bytes_of(b) and is_normal(both)
    assert bytes_of(a_only) == bytes_of(a) - bytes_of(b) and is_normal(a_only)
    plan = delta_plan(na, nb)
    assert bytes_of([s.extent for s in plan if s.compare]) == bytes_of(a) & bytes_of(b)
    assert bytes_of([s.extent for s in plan if not s.compare]) == bytes_of(a) ^ bytes_of(b)
    offsets = [s.extent.offset for s in plan]
    assert offsets == sorted(offsets)
