"""The CSI SnapshotMetadata service (alpha): allocated and changed ranges of block snapshots.

A snapshot of a block volume is a sparse copy of the volume's image, so:

- GetMetadataAllocated reports the image's data extents (SEEK_DATA/SEEK_HOLE). A sparse copy
  stores runs of zeros as holes, so these are the ranges holding non-zero data, at the
  granularity of the state directory's filesystem block (4 KiB on ext4 and xfs).
- GetMetadataDelta reports what differs between two snapshots of one volume: ranges where only
  one image holds data, and, where both do, the 4 KiB blocks whose bytes differ (read and
  compared; the copies share no history to ask instead).

Both stream VARIABLE_LENGTH tuples: adjacent changed blocks are merged into one range, and the
first range is cut at starting_offset, so a resumed call never repeats a byte before it.
Snapshots of filesystem volumes and of directory volumes are refused with INVALID_ARGUMENT: the
service is defined for block volumes. A snapshot whose source volume was deleted is accepted
when it is an image (its access type is no longer known).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from ._proto import csi_pb2 as pb
from ._proto import csi_pb2_grpc as rpc
from .backends import Backend
from .errors import Internal, InvalidArgument, NotFound, OutOfRange
from .extents import Extent, Segment, batches, clip, coalesce, delta_plan, differing_blocks
from .models import AccessType, Snapshot, is_snapshot_id
from .state import Catalog
from .volume_sources import snapshot_kind

log = logging.getLogger(__name__)

#: Tuples per response message when the request leaves max_results at 0.
DEFAULT_MAX_RESULTS = 1024
#: The unit of the content comparison (the page size and both filesystems' block size).
COMPARE_BLOCK = 4096
#: Bytes read from each image at a time while comparing.
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class MetadataStream:
    capacity_bytes: int
    extents: Iterator[Extent]  # normal (ascending, disjoint), computed lazily


def data_extents(fd: int, size: int) -> list[Extent]:
    """The data (non-hole) extents of the first size bytes of an open file."""
    out: list[Extent] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data at or after pos
                break
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        out.append(Extent.between(start, end))
        pos = end
    return out


def changed_extents(plan: Sequence[Segment], base_fd: int, target_fd: int) -> Iterator[Extent]:
    """Walk a delta plan: one-sided ranges as they are, shared ones compared block by block."""
    for seg in plan:
        if not seg.compare:
            yield seg.extent
            continue
        pos = seg.extent.offset
        while pos < seg.extent.end:
            size = min(READ_CHUNK, seg.extent.end - pos)
            base = os.pread(base_fd, size, pos)
            target = os.pread(target_fd, size, pos)
            if len(base) != size or len(target) != size:
                raise Internal(f"a snapshot image shrank while it was read (at byte {pos})")
            yield from differing_blocks(base, target, pos, COMPARE_BLOCK)
            pos += size


class SnapshotMetadataReader:
    """Domain side of the service: validates requests and computes the ranges."""

    def __init__(self, catalog: Catalog, backends: Mapping[str, Backend]) -> None:
        self.catalog = catalog
        self.backends = backends

    def snapshot(self, snapshot_id: str, field: str) -> Snapshot:
        if not snapshot_id:
            raise InvalidArgument(f"{field} is required")
        snap = self.catalog.snapshot(snapshot_id) if is_snapshot_id(snapshot_id) else None
        if snap is None:
            raise NotFound(f"snapshot {snapshot_id!r} ({field}) does not exist")
        return snap

    def image(self, snap: Snapshot) -> Path:
        """The snapshot's image file; INVALID_ARGUMENT unless it is of a block volume."""
        vol = self.catalog.volume(snap.source_volume_id)
        if vol is not None and vol.access_type is not AccessType.BLOCK:
            raise InvalidArgument(
                f"snapshot {snap.id} is of volume {vol.id}, a filesystem volume: snapshot "
                "metadata is only served for block volumes"
            )
        kind = snapshot_kind(self.catalog, snap)
        backend = self.backends.get(kind)
        if backend is None or not backend.raw_block_snapshots:
            raise InvalidArgument(
                f"snapshot {snap.id} is of a volume of kind {kind or 'unknown'!r}: snapshot "
                "metadata is only served for block volumes"
            )
        return backend.snapshot_path(snap.id)

    @contextmanager
    def allocated(self, snapshot_id: str, starting_offset: int) -> Iterator[MetadataStream]:
        snap = self.snapshot(snapshot_id, "snapshot_id")
        path = self.image(snap)
        check_offset(starting_offset, snap.size_bytes)
        with open_image(path, snap) as fd:
            extents = data_extents(fd, os.fstat(fd).st_size)
        yield MetadataStream(snap.size_bytes, iter(clip(extents, starting_offset, snap.size_bytes)))

    @contextmanager
    def delta(self, base_id: str, target_id: str, starting_offset: int) -> Iterator[MetadataStream]:
        base = self.snapshot(base_id, "base_snapshot_id")
        target = self.snapshot(target_id, "target_snapshot_id")
        if base.source_volume_id != target.source_volume_id:
            raise InvalidArgument(
                f"base snapshot {base.id} is of volume {base.source_volume_id} and target "
                f"snapshot {target.id} of volume {target.source_volume_id}: a delta needs two "
                "snapshots of one volume"
            )
        if target.created_at < base.created_at:
            raise InvalidArgument(
                f"target snapshot {target.id} was taken before base snapshot {base.id}; swap them"
            )
        base_path, target_path = self.image(base), self.image(target)
        capacity = target.size_bytes
        check_offset(starting_offset, capacity)
        with open_image(base_path, base) as base_fd, open_image(target_path, target) as target_fd:
            plan = delta_plan(
                clip(data_extents(base_fd, os.fstat(base_fd).st_size), starting_offset, capacity),
                clip(
                    data_extents(target_fd, os.fstat(target_fd).st_size), starting_offset, capacity
                ),
            )
            yield MetadataStream(capacity, coalesce(changed_extents(plan, base_fd, target_fd)))


def check_offset(offset: int, capacity: int) -> None:
    if offset < 0 or offset > capacity:
        raise OutOfRange(f"starting_offset {offset} is outside the snapshot's {capacity} bytes")


@contextmanager
def open_image(path: Path, snap: Snapshot) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Internal(
            f"the image {path} of snapshot {snap.id} is missing from the state directory"
        ) from None
    try:
        yield fd
    finally:
        os.close(fd)


Response = TypeVar("Response", pb.GetMetadataAllocatedResponse, pb.GetMetadataDeltaResponse)


class SnapshotMetadataService(rpc.SnapshotMetadataServicer):
    """Streams the reader's ranges in the spec's chunks.

    Errors are raised as DriverErrors; the driver's interceptor maps them for streams too.
    """

    def __init__(self, reader: SnapshotMetadataReader) -> None:
        self.reader = reader

    def GetMetadataAllocated(
        self, request: pb.GetMetadataAllocatedRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GetMetadataAllocatedResponse]:
        return stream(
            lambda: self.reader.allocated(request.snapshot_id, request.starting_offset),
            request.max_results,
            pb.GetMetadataAllocatedResponse,
        )

    def GetMetadataDelta(
        self, request: pb.GetMetadataDeltaRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GetMetadataDeltaResponse]:
        return stream(
            lambda: self.reader.delta(
                request.base_snapshot_id, request.target_snapshot_id, request.starting_offset
            ),
            request.max_results,
            pb.GetMetadataDeltaResponse,
        )


def stream(
    opener: Callable[[], AbstractContextManager[MetadataStream]],
    max_results: int,
    response: type[Response],
) -> Iterator[Response]:
    """Validate, then send the ranges max_results at a time (the interceptor maps errors)."""
    if max_results < 0:
        raise InvalidArgument(f"max_results must not be negative, got {max_results}")
    try:
        with opener() as found:
            for batch in batches(found.extents, max_results or DEFAULT_MAX_RESULTS):
                yield response(
                    block_metadata_type=pb.VARIABLE_LENGTH,
                    volume_capacity_bytes=found.capacity_bytes,
                    block_metadata=[
                        pb.BlockMetadata(byte_offset=e.offset, size_bytes=e.length) for e in batch
                    ],
                )
    except OSError as exc:
        raise Internal(f"reading a snapshot image failed: {exc.strerror or exc}") from exc
