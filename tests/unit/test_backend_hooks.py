"""Core modules ask a volume's backend, never the kind's name: a kind other than `image` that
declares a capability (freezing, raw block snapshots, staged health) gets it everywhere.

Regression tests: before the hooks, health looked for loop devices of `image` volumes only,
group snapshots froze only `image` volumes, snapshot metadata served only `image` snapshots, and
each built the snapshot file's name as `<id>.img`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from csi_hostpath_selinux.backends import Backend, BackendEnv, FakeBackend
from csi_hostpath_selinux.config import DriverConfig
from csi_hostpath_selinux.fake_mounts import FakeMounter
from csi_hostpath_selinux.group_snapshots import GroupSnapshots
from csi_hostpath_selinux.health import HealthChecker
from csi_hostpath_selinux.locks import OperationLocks
from csi_hostpath_selinux.models import (
    AccessType,
    HealthIssue,
    HealthStatus,
    Snapshot,
    Staging,
    StagingState,
    Volume,
    new_snapshot_id,
    new_volume_id,
)
from csi_hostpath_selinux.snapshot_metadata import SnapshotMetadataReader
from csi_hostpath_selinux.snapshots import SnapshotManager
from csi_hostpath_selinux.state import Catalog

MIB = 1024 * 1024
ISSUE = HealthIssue(
    status=HealthStatus.INACCESSIBLE,
    reason="VendorDeviceGone",
    message="the vendor's device is gone",
)


class Capable(FakeBackend):
    """A vendor's kind: freezes mounted volumes, snapshots block volumes raw, has a signal."""

    kind: ClassVar[str] = "capable"
    supports_block: ClassVar[bool] = True
    raw_block_snapshots: ClassVar[bool] = True
    volume_suffix: ClassVar[str] = ".capable"
    snapshot_suffix: ClassVar[str] = ".snap"

    def can_freeze(self, volume: Volume) -> bool:
        return volume.access_type is AccessType.MOUNT

    def staged_health(self, volume: Volume, staging: Staging) -> list[HealthIssue]:
        return [ISSUE]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[DriverConfig, Catalog, dict[str, Backend]]]:
    config = DriverConfig(node_id="n1", state_dir=tmp_path)
    catalog = Catalog(config.catalog_path)
    backends: dict[str, Backend] = {"capable": Capable(BackendEnv(tmp_path, FakeMounter()))}
    yield config, catalog, backends
    catalog.close()


def add_volume(catalog: Catalog, access: AccessType) -> Volume:
    vol = Volume(
        id=new_volume_id(),
        name=f"pvc-{time.monotonic_ns()}",
        kind="capable",
        capacity_bytes=MIB,
        access_type=access,
        fs_type="",
        parameters={"kind": "capable"},
        content_source=None,
        ephemeral=False,
        created_at=1.0,
    )
    catalog.add_volume(vol)
    catalog.put_staging(
        Staging(
            volume_id=vol.id,
            staging_path=f"/staging/{vol.id}",
            label=None,
            flags=(),
            device="/dev/x",
            access_type=access,
            state=StagingState.READY,
        )
    )
    return vol


def test_node_health_asks_the_kind_for_its_staged_signals(
    world: tuple[DriverConfig, Catalog, dict[str, Backend]],
) -> None:
    config, catalog, backends = world
    vol = add_volume(catalog, AccessType.BLOCK)
    backends["capable"].create(vol, {}, None)
    checker = HealthChecker(config, catalog, backends, table=FakeMounter())
    assert checker.node(vol) == [ISSUE]


def test_a_group_snapshot_freezes_a_kind_that_can_freeze(
    world: tuple[DriverConfig, Catalog, dict[str, Backend]],
) -> None:
    config, catalog, backends = world
    vol = add_volume(catalog, AccessType.MOUNT)  # staged: in use
    locks = OperationLocks()
    groups = GroupSnapshots(
        catalog, backends, locks, SnapshotManager(config, catalog, backends, locks)
    )
    member = groups.plan_member(vol)  # refused as "cannot be frozen" before the hook
    assert member.dest == backends["capable"].snapshot_path(member.snapshot_id)
    assert member.dest.name.endswith(".snap")


def test_snapshot_metadata_serves_a_kind_with_raw_block_snapshots(
    world: tuple[DriverConfig, Catalog, dict[str, Backend]],
) -> None:
    _, catalog, backends = world
    vol = add_volume(catalog, AccessType.BLOCK)
    snap = Snapshot(
        id=new_snapshot_id(),
        name="s",
        source_volume_id=vol.id,
        size_bytes=MIB,
        created_at=1.0,
        ready=True,
        source_access_type="block",
    )
    catalog.add_snapshot(snap)
    stored = catalog.snapshot(snap.id)
    assert stored is not None and stored.kind == "capable"
    path = SnapshotMetadataReader(catalog, backends).image(stored)
    assert path == backends["capable"].snapshot_path(snap.id)
