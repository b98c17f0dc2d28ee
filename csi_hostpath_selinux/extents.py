"""Byte ranges of snapshot images: merging, set operations, block diffs and stream chunking.

Pure functions only (no files, no gRPC), so the SnapshotMetadata service's arithmetic has table
tests of its own. A range is an `Extent` of `length` bytes at `offset`; lists of extents that
these functions return are *normal*: sorted, non-empty, neither overlapping nor touching.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Extent:
    """length bytes starting at byte offset (a BlockMetadata tuple of the CSI spec)."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        """The first byte after the extent."""
        return self.offset + self.length

    @classmethod
    def between(cls, start: int, end: int) -> Extent:
        return cls(start, end - start)


@dataclass(frozen=True)
class Segment:
    """A part of the union of two snapshots' data: changed for sure, or to compare by content."""

    extent: Extent
    compare: bool  # True: both images hold data here; only their bytes can tell a change


def coalesce(extents: Iterable[Extent]) -> Iterator[Extent]:
    """Merge overlapping and touching extents of an ascending stream; drop empty ones.

    The input must be sorted by offset (it is consumed lazily, so it may be a generator).
    """
    current: Extent | None = None
    for ext in extents:
        if ext.length <= 0:
            continue
        if current is None:
            current = ext
        elif ext.offset < current.offset:
            raise ValueError(f"extents out of order: {ext} after {current}")
        elif ext.offset <= current.end:
            current = Extent.between(current.offset, max(current.end, ext.end))
        else:
            yield current
            current = ext
    if current is not None:
        yield current


def normalize(extents: Iterable[Extent]) -> list[Extent]:
    """Sort, merge and drop empty extents."""
    return list(coalesce(sorted(e for e in extents if e.length > 0)))


def intersect(a: Sequence[Extent], b: Sequence[Extent]) -> list[Extent]:
    """Bytes in both a and b (both normal)."""
    out: list[Extent] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start = max(a[i].offset, b[j].offset)
        end = min(a[i].end, b[j].end)
        if start < end:
            out.append(Extent.between(start, end))
        if a[i].end <= b[j].end:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Sequence[Extent], b: Sequence[Extent]) -> list[Extent]:
    """Bytes in a and not in b (both normal)."""
    out: list[Extent] = []
    j = 0
    for ext in a:
        start = ext.offset
        while j < len(b) and b[j].end <= start:
            j += 1
        k = j
        while k < len(b) and b[k].offset < ext.end:
            if b[k].offset > start:
                out.append(Extent.between(start, b[k].offset))
            start = max(start, b[k].end)
            k += 1
        if start < ext.end:
            out.append(Extent.between(start, ext.end))
    return out


def clip(extents: Iterable[Extent], start: int, end: int) -> list[Extent]:
    """The parts of extents inside [start, end)."""
    out = []
    for ext in extents:
        lo, hi = max(ext.offset, start), min(ext.end, end)
        if lo < hi:
            out.append(Extent.between(lo, hi))
    return out


def delta_plan(base: Sequence[Extent], target: Sequence[Extent]) -> list[Segment]:
    """How to find what changed from base to target, given each image's data extents (normal).

    Where only one image holds data, the range changed (the other reads as zeros, and a sparse
    copy stores zeros as holes). Where both hold data, only a content comparison can tell.
    Where neither does, both read as zeros: unchanged.
    """
    one_sided = normalize([*subtract(base, target), *subtract(target, base)])
    both = intersect(base, target)
    segments = [Segment(e, False) for e in one_sided] + [Segment(e, True) for e in both]
    return sorted(segments, key=lambda s: s.extent.offset)


def differing_blocks(base: bytes, target: bytes, offset: int, block_size: int) -> list[Extent]:
    """Blocks of block_size bytes where base and target differ; the buffers start at offset.

    The buffers must have the same length; a last, shorter block is compared as it is.
    """
    if len(base) != len(target):
        raise ValueError(f"buffers differ in length: {len(base)} and {len(target)}")
    if block_size <= 0:
        raise ValueError(f"block size must be positive, got {block_size}")
    if base == target:
        return []
    changed: list[Extent] = []
    view_a, view_b = memoryview(base), memoryview(target)
    for pos in range(0, len(base), block_size):
        end = min(pos + block_size, len(base))
        if view_a[pos:end] != view_b[pos:end]:
            changed.append(Extent.between(offset + pos, offset + end))
    return list(coalesce(changed))


def batches(extents: Iterable[Extent], max_results: int) -> Iterator[list[Extent]]:
    """Group a stream of extents into lists of at most max_results (> 0) entries each.

    Always yields at least one list (possibly empty), so a response stream carries the volume's
    capacity even when there is no data to report.
    """
    if max_results <= 0:
        raise ValueError(f"max_results must be positive, got {max_results}")
    batch: list[Extent] = []
    sent = False
    for ext in extents:
        batch.append(ext)
        if len(batch) == max_results:
            yield batch
            sent = True
            batch = []
    if batch or not sent:
        yield batch
