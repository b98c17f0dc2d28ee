"""Label drift in volume health, over fake mountinfo and xattr readers.

The host kernel here has SELinux off, so no mount can carry a context; the VM suite (tests/e2e)
remounts a labelled volume behind the driver's back under a real SELinux kernel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from csi_hostpath_selinux.backends import BackendEnv, NFSBackend
from csi_hostpath_selinux.config import DriverConfig
from csi_hostpath_selinux.fake_mounts import FakeMounter
from csi_hostpath_selinux.health import HealthChecker
from csi_hostpath_selinux.models import (
    AccessMode,
    AccessType,
    HealthIssue,
    HealthStatus,
    Publication,
    Staging,
    StagingState,
    Volume,
)
from csi_hostpath_selinux.mountinfo import MountEntry, find_mount
from csi_hostpath_selinux.state import Catalog

L1 = "system_u:object_r:container_file_t:s0:c1,c2"
L2 = "system_u:object_r:container_file_t:s0:c3,c4"
SVIRT = "system_u:object_r:svirt_lxc_file_t:s0:c1,c2"
CUSTOM = "system_u:object_r:acme.volume_t:s0:c0,c1,c2"


class ReachableNFS(NFSBackend):
    """The NFS kind with its server check answered: these tests are about the mounts."""

    def health(self, volume: Volume) -> list[HealthIssue]:
        return []


@dataclass
class Node:
    checker: HealthChecker
    catalog: Catalog
    vol: Volume
    staging: str
    target: str
    table: list[MountEntry] = field(default_factory=list)
    labels: dict[str, str | None] = field(default_factory=dict)
    label_reads: list[str] = field(default_factory=list)

    def mount(self, path: str, super_options: tuple[str, ...], root_label: str | None) -> None:
        self.table.append(
            MountEntry(
                len(self.table) + 100,
                1,
                0,
                50,
                "/" + self.vol.id,
                path,
                ("rw", "nosuid", "nodev"),
                (),
                "nfs4",
                f"nfs.example:/srv/{self.vol.id}",
                ("rw", *super_options),
            )
        )
        self.labels[path] = root_label

    def stage(self, label: str | None) -> None:
        self.catalog.put_staging(
            Staging(
                volume_id=self.vol.id,
                staging_path=self.staging,
                label=label,
                flags=(),
                device="",
                access_type=AccessType.MOUNT,
                state=StagingState.READY,
            )
        )

    def publish(self, label: str | None) -> None:
        self.catalog.put_publication(
            Publication(
                volume_id=self.vol.id,
                target_path=self.target,
                staging_path=self.staging,
                read_only=False,
                label=label,
                flags=(),
                access_mode=AccessMode.SINGLE_NODE_WRITER,
            )
        )

    def read_label(self, path: str) -> str | None:
        self.label_reads.append(path)
        return self.labels[path]


class ListTable:
    """A mount table made of the test's own entries; a path's mount is found by the name the
    kernel gives the opened path (these entries have no mount ids the kernel knows)."""

    def __init__(self, rows: list[MountEntry]) -> None:
        self.rows = rows  # the Node's list: mounts the test adds later show up

    def entries(self) -> list[MountEntry]:
        return list(self.rows)

    def mount_at_fd(self, fd: int, entries: Sequence[MountEntry]) -> MountEntry | None:
        return find_mount(os.readlink(f"/proc/self/fd/{fd}"), entries)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    kubelet = tmp_path / "kubelet"
    staging = kubelet / "plugins" / "globalmount"
    target = kubelet / "pods" / "uid" / "mount"
    staging.mkdir(parents=True)
    target.mkdir(parents=True)
    config = DriverConfig(node_id="n1", state_dir=tmp_path / "state", kubelet_dir=str(kubelet))
    catalog = Catalog(tmp_path / "catalog.sqlite")
    backends = {"nfs": ReachableNFS(BackendEnv(config.state_dir, FakeMounter()))}
    vol = Volume(
        id="vol-" + "1" * 32,
        name="pvc-a",
        kind="nfs",
        capacity_bytes=1 << 30,
        access_type=AccessType.MOUNT,
        fs_type="nfs",
        parameters={"kind": "nfs", "server": "nfs.example", "share": "/srv"},
    )
    catalog.add_volume(vol)
    world = Node(HealthChecker(config, catalog, backends), catalog, vol, str(staging), str(target))
    world.checker.table = ListTable(world.table)
    world.checker.read_label = world.read_label
    yield world
    catalog.close()


def reasons(issues: list[HealthIssue]) -> list[tuple[HealthStatus, str]]:
    return [(i.status, i.reason) for i in issues]


def both(node: Node) -> tuple[list[HealthIssue], list[HealthIssue]]:
    """ControllerGetVolumeHealth's and NodeGetVolumeHealth's view."""
    return node.checker.controller(node.vol), node.checker.node(node.vol)


def real(path: str) -> str:
    return os.path.realpath(path)


@pytest.mark.parametrize("label", [L1, SVIRT, CUSTOM])
def test_a_mount_that_still_carries_its_label_is_healthy(node: Node, label: str) -> None:
    # the kernel prints categories in its canonical form (c0.c2 for c0,c1,c2)
    shown = label.replace("c0,c1,c2", "c0.c2")
    node.stage(label)
    node.mount(real(node.staging), ("seclabel", f'context="{shown}"'), shown)
    assert both(node) == ([], [])


@pytest.mark.parametrize("label", [L1, SVIRT, CUSTOM])
def test_a_labelled_volume_remounted_without_its_context_is_inaccessible(
    node: Node, label: str
) -> None:
    node.stage(label)
    node.mount(real(node.staging), ("seclabel",), "system_u:object_r:nfs_t:s0")
    for issues in both(node):
        assert reasons(issues) == [(HealthStatus.INACCESSIBLE, "SELinuxLabelLost")]
        message = issues[0].message
        assert label in message and node.staging in message
        assert "no context= option" in message
        assert "delete the pods that use the volume on this node" in message


def test_a_labelled_volume_remounted_with_another_context_names_both(node: Node) -> None:
    node.stage(L1)
    node.mount(real(node.staging), (f'context="{L2}"',), L2)
    for issues in both(node):
        assert reasons(issues) == [(HealthStatus.INACCESSIBLE, "SELinuxLabelChanged")]
        assert L1 in issues[0].message and f"context={L2}" in issues[0].message


@pytest.mark.parametrize("root", [L2, None])
def test_a_root_that_reads_another_label_is_degraded(node: Node, root: str | None) -> None:
    node.stage(L1)
    node.mount(real(node.staging), (f'context="{L1}"',), root)
    for issues in both(node):
        assert reasons(issues) == [(HealthStatus.DEGRADED, "SELinuxRootLabelChanged")]
        assert f"root reads {root or 'no label'}" in issues[0].message


def test_an_unlabelled_volume_is_not_checked_for_a_label(node: Node) -> None:
    node.stage(None)
    node.mount(real(node.staging), ("seclabel",), "system_u:object_r:nfs_t:s0")
    assert both(node) == ([], [])
    assert node.label_reads == []


def test_a_publication_that_lost_its_label_is_reported_at_its_target(node: Node) -> None:
    node.stage(L1)
    node.publish(L1)
    node.mount(real(node.staging), (f'context="{L1}"',), L1)
    node.mount(real(node.target), ("seclabel",), None)
    issues = node.checker.node(node.vol, publish_path=node.target)
    assert reasons(issues) == [(HealthStatus.INACCESSIBLE, "SELinuxLabelLost")]
    assert node.target in issues[0].message


def test_a_missing_staging_mount_is_reported_once(node: Node) -> None:
    node.stage(L1)
    assert reasons(node.checker.node(node.vol)) == [
        (HealthStatus.INACCESSIBLE, "StagingMountMissing")
    ]
    assert node.checker.controller(node.vol) == [], "the mount's absence is the node's to report"
