"""Restores and clones never change a volume's mode (block <-> filesystem) unless allowed.

A block volume's bytes are written raw by a pod; restored or cloned into a filesystem volume,
the node's kernel would parse them as ext4 (a crafted image is an attack on the kernel). The
other way round, a pod would get a filesystem's raw bytes. Kubernetes guards the same way with
snapshot.storage.kubernetes.io/allow-volume-mode-change.
"""

from __future__ import annotations

import grpc
import pytest

from csi_hostpath_selinux._proto import csi_pb2 as pb
from tests.support.driver import Clients
from tests.support.requests import block_cap, create, mount_cap

pytestmark = pytest.mark.integration


def from_snapshot(req: pb.CreateVolumeRequest, snap_id: str) -> pb.CreateVolumeRequest:
    req.volume_content_source.snapshot.snapshot_id = snap_id
    return req


def from_volume(req: pb.CreateVolumeRequest, vol_id: str) -> pb.CreateVolumeRequest:
    req.volume_content_source.volume.volume_id = vol_id
    return req


def refused(csi: Clients, req: pb.CreateVolumeRequest) -> str:
    with pytest.raises(grpc.RpcError) as err:
        csi.controller.CreateVolume(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return err.value.details() or ""


def test_block_never_restores_or_clones_into_a_filesystem(csi: Clients) -> None:
    block = csi.controller.CreateVolume(create("mode-block", block_cap())).volume
    snap = csi.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(name="mode-snap", source_volume_id=block.volume_id)
    ).snapshot
    ext4 = mount_cap("ext4")
    words = refused(csi, from_snapshot(create("mode-restore", ext4), snap.snapshot_id))
    assert "block volume" in words and "allowVolumeModeChange" in words, words
    refused(csi, from_volume(create("mode-clone", ext4), block.volume_id))
    # The guard holds after the source volume is gone (the snapshot remembers its mode).
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=block.volume_id))
    refused(csi, from_snapshot(create("mode-restore-2", ext4), snap.snapshot_id))
    # Same mode restores; an explicit allow converts.
    same = csi.controller.CreateVolume(
        from_snapshot(create("mode-same", block_cap()), snap.snapshot_id)
    ).volume
    allowed = csi.controller.CreateVolume(
        from_snapshot(create("mode-allowed", ext4, allowVolumeModeChange="true"), snap.snapshot_id)
    ).volume
    names = {
        e.volume.volume_id for e in csi.controller.ListVolumes(pb.ListVolumesRequest()).entries
    }
    assert {same.volume_id, allowed.volume_id} <= names
    for vol in (same, allowed):
        csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id))
    csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))


def test_filesystem_never_restores_into_block(csi: Clients) -> None:
    fs = csi.controller.CreateVolume(create("mode-fs", mount_cap("ext4"))).volume
    snap = csi.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(name="mode-fs-snap", source_volume_id=fs.volume_id)
    ).snapshot
    refused(csi, from_snapshot(create("mode-fs-restore", block_cap()), snap.snapshot_id))
    refused(csi, from_volume(create("mode-fs-clone", block_cap()), fs.volume_id))
    csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=fs.volume_id))
