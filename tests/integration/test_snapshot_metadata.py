"""The SnapshotMetadata service against blocks the test really wrote to a block volume.

Writes go through the published block device file at known offsets; the reported allocated and
changed ranges must be exactly those blocks (the state directory's filesystem has 4 KiB blocks
and snapshots are sparse copies, so every written non-zero block is data, everything else a hole).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux._proto import csi_pb2_grpc as rpc
from tests.support.driver import Clients, DriverProcess
from tests.support.kubelet import stage
from tests.support.requests import MIB, block_cap, create, mount_cap

pytestmark = pytest.mark.integration

BLOCK = 4096
SIZE = 64 * MIB


def pattern(seed: int, blocks: int = 1) -> bytes:
    """Non-zero bytes that differ per seed."""
    return bytes((seed * 7 + i) % 251 + 1 for i in range(BLOCK)) * blocks


@dataclass
class BlockVolume:
    csi: Clients
    volume_id: str
    staging: str
    target: str

    def write(self, block: int, data: bytes) -> None:
        fd = os.open(self.target, os.O_WRONLY)
        try:
            os.pwrite(fd, data, block * BLOCK)
            os.fsync(fd)
        finally:
            os.close(fd)

    def snapshot(self, name: str) -> str:
        return self.csi.controller.CreateSnapshot(
            pb.CreateSnapshotRequest(name=name, source_volume_id=self.volume_id)
        ).snapshot.snapshot_id


@pytest.fixture
def volume(csi: Clients, driver: DriverProcess) -> Iterator[BlockVolume]:
    cap = block_cap()
    vol_id = csi.controller.CreateVolume(create("pvc-raw", cap, SIZE)).volume.volume_id
    kubelet = driver.root.parent / "kubelet"
    staging = str(kubelet / "plugins" / "raw-globalmount")
    pod = kubelet / "pods" / "uid-raw"
    pod.mkdir(parents=True)
    target = str(pod / "dev")
    stage(csi, vol_id, staging, cap)
    csi.node.NodePublishVolume(
        pb.NodePublishVolumeRequest(
            volume_id=vol_id, staging_target_path=staging, target_path=target, volume_capability=cap
        )
    )
    yield BlockVolume(csi, vol_id, staging, target)
    csi.node.NodeUnpublishVolume(
        pb.NodeUnpublishVolumeRequest(volume_id=vol_id, target_path=target)
    )
    csi.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=vol_id, staging_target_path=staging)
    )
    for entry in csi.controller.ListSnapshots(pb.ListSnapshotsRequest()).entries:
        csi.controller.DeleteSnapshot(
            pb.DeleteSnapshotRequest(snapshot_id=entry.snapshot.snapshot_id)
        )
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol_id))


@pytest.fixture
def metadata(driver: DriverProcess) -> rpc.SnapshotMetadataStub:
    return rpc.SnapshotMetadataStub(driver.channel())


def ranges_of(
    responses: Iterable[pb.GetMetadataAllocatedResponse] | Iterable[pb.GetMetadataDeltaResponse],
    max_results: int = 0,
) -> list[tuple[int, int]]:
    """(offset, size) of every tuple in the stream, after checking the spec's per-message rules."""
    out = []
    for response in responses:
        assert response.block_metadata_type == pb.VARIABLE_LENGTH
        assert response.volume_capacity_bytes == SIZE
        if max_results:
            assert len(response.block_metadata) <= max_results
        out += [(b.byte_offset, b.size_bytes) for b in response.block_metadata]
    for (a_off, a_size), (b_off, _) in itertools.pairwise(out):
        assert a_off + a_size <= b_off, "tuples ascend and never overlap"
    assert all(size > 0 for _, size in out)
    return out


def blocks(*spans: tuple[int, int]) -> list[tuple[int, int]]:
    """Byte ranges of runs of blocks: (first block, block count)."""
    return [(first * BLOCK, count * BLOCK) for first, count in spans]


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


def test_allocated_and_changed_blocks(
    volume: BlockVolume, metadata: rpc.SnapshotMetadataStub
) -> None:
    volume.write(3, pattern(1))
    volume.write(10, pattern(2, 3))  # blocks 10, 11, 12
    volume.write(1000, pattern(3))
    volume.write(16383, pattern(4))  # the last block of the volume
    first = volume.snapshot("first")

    allocated = ranges_of(
        metadata.GetMetadataAllocated(pb.GetMetadataAllocatedRequest(snapshot_id=first))
    )
    assert allocated == blocks((3, 1), (10, 3), (1000, 1), (16383, 1))

    volume.write(11, pattern(5))  # changed content
    volume.write(3, pattern(1))  # rewritten with the same bytes: not a change
    volume.write(1000, bytes(BLOCK))  # zeroed: a hole in the new copy
    volume.write(2000, pattern(6, 2))  # written where there was a hole
    volume.write(2002, pattern(7))  # ... and the block right after: one range
    second = volume.snapshot("second")

    delta = ranges_of(
        metadata.GetMetadataDelta(
            pb.GetMetadataDeltaRequest(base_snapshot_id=first, target_snapshot_id=second)
        )
    )
    assert delta == blocks((11, 1), (1000, 1), (2000, 3))
    same = ranges_of(
        metadata.GetMetadataDelta(
            pb.GetMetadataDeltaRequest(base_snapshot_id=second, target_snapshot_id=second)
        )
    )
    assert same == []

    # Chunking: at most max_results tuples a message, the same tuples in all.
    responses = list(
        metadata.GetMetadataDelta(
            pb.GetMetadataDeltaRequest(
                base_snapshot_id=first, target_snapshot_id=second, max_results=1
            )
        )
    )
    assert [len(r.block_metadata) for r in responses] == [1, 1, 1]
    assert ranges_of(iter(responses), 1) == delta

    # Resuming: nothing that ends before starting_offset; a range across it is cut there.
    resumed = ranges_of(
        metadata.GetMetadataAllocated(
            pb.GetMetadataAllocatedRequest(snapshot_id=first, starting_offset=11 * BLOCK + 100)
        )
    )
    assert resumed == [(11 * BLOCK + 100, 2 * BLOCK - 100), *blocks((1000, 1), (16383, 1))]
    resumed_delta = ranges_of(
        metadata.GetMetadataDelta(
            pb.GetMetadataDeltaRequest(
                base_snapshot_id=first, target_snapshot_id=second, starting_offset=1001 * BLOCK
            )
        )
    )
    assert resumed_delta == blocks((2000, 3))
    at_end = list(
        metadata.GetMetadataAllocated(
            pb.GetMetadataAllocatedRequest(snapshot_id=first, starting_offset=SIZE)
        )
    )
    assert len(at_end) == 1 and not at_end[0].block_metadata
    assert at_end[0].volume_capacity_bytes == SIZE


def test_errors(volume: BlockVolume, metadata: rpc.SnapshotMetadataStub, csi: Clients) -> None:
    plugin = csi.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest())
    services = {c.service.type for c in plugin.capabilities if c.HasField("service")}
    assert pb.PluginCapability.Service.SNAPSHOT_METADATA_SERVICE in services

    volume.write(0, pattern(1))
    base = volume.snapshot("base")
    target = volume.snapshot("target")
    other_vol = csi.controller.CreateVolume(create("pvc-other", block_cap())).volume.volume_id
    other = csi.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(name="other", source_volume_id=other_vol)
    ).snapshot.snapshot_id
    fs_vol = csi.controller.CreateVolume(create("pvc-fs", mount_cap("ext4"))).volume.volume_id
    fs_snap = csi.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(name="fs", source_volume_id=fs_vol)
    ).snapshot.snapshot_id
    missing = "snap-" + "0" * 32

    def allocated(
        snapshot_id: str = "", starting_offset: int = 0, max_results: int = 0
    ) -> Callable[[], object]:
        request = pb.GetMetadataAllocatedRequest(
            snapshot_id=snapshot_id, starting_offset=starting_offset, max_results=max_results
        )
        return lambda: list(metadata.GetMetadataAllocated(request))

    def delta(
        base_snapshot_id: str = "", target_snapshot_id: str = "", starting_offset: int = 0
    ) -> Callable[[], object]:
        request = pb.GetMetadataDeltaRequest(
            base_snapshot_id=base_snapshot_id,
            target_snapshot_id=target_snapshot_id,
            starting_offset=starting_offset,
        )
        return lambda: list(metadata.GetMetadataDelta(request))

    cases = [
        (allocated(), grpc.StatusCode.INVALID_ARGUMENT, "snapshot_id is required"),
        (allocated(snapshot_id=missing), grpc.StatusCode.NOT_FOUND, missing),
        (allocated(snapshot_id="nonsense"), grpc.StatusCode.NOT_FOUND, "nonsense"),
        (allocated(snapshot_id=base, starting_offset=-1), grpc.StatusCode.OUT_OF_RANGE, "-1"),
        (allocated(snapshot_id=base, starting_offset=SIZE + 1), grpc.StatusCode.OUT_OF_RANGE, ""),
        (
            allocated(snapshot_id=base, max_results=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "max_results",
        ),
        (allocated(snapshot_id=fs_snap), grpc.StatusCode.INVALID_ARGUMENT, "block volumes"),
        (delta(target_snapshot_id=target), grpc.StatusCode.INVALID_ARGUMENT, "base_snapshot_id"),
        (delta(base_snapshot_id=base), grpc.StatusCode.INVALID_ARGUMENT, "target_snapshot_id"),
        (
            delta(base_snapshot_id=base, target_snapshot_id=missing),
            grpc.StatusCode.NOT_FOUND,
            missing,
        ),
        (
            delta(base_snapshot_id=base, target_snapshot_id=other),
            grpc.StatusCode.INVALID_ARGUMENT,
            "one volume",
        ),
        (
            delta(base_snapshot_id=target, target_snapshot_id=base),
            grpc.StatusCode.INVALID_ARGUMENT,
            "before",
        ),
        (
            delta(base_snapshot_id=base, target_snapshot_id=target, starting_offset=SIZE + 1),
            grpc.StatusCode.OUT_OF_RANGE,
            "",
        ),
    ]
    for call, code, text in cases:
        got, message = code_of(call)
        assert (got, text in message) == (code, True), message
    for vol_id in (other_vol, fs_vol):
        csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol_id))


def test_a_snapshot_deleted_mid_stream_is_still_read_whole(
    volume: BlockVolume, metadata: rpc.SnapshotMetadataStub, driver: DriverProcess
) -> None:
    for block in range(0, 4000, 2):  # 2000 separate ranges: several messages
        volume.write(block, pattern(block))
    snap = volume.snapshot("many")
    stream = iter(
        metadata.GetMetadataAllocated(
            pb.GetMetadataAllocatedRequest(snapshot_id=snap, max_results=100)
        )
    )
    first = next(stream)
    volume.csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snap))
    assert not list(Path(driver.state_dir, "snapshots").glob("*"))
    rest = ranges_of(stream, 100)
    assert [(b.byte_offset, b.size_bytes) for b in first.block_metadata] + rest == [
        (b * BLOCK, BLOCK) for b in range(0, 4000, 2)
    ]
