"""The driver's domain objects built in the test process (no gRPC): over real mounts, for tests
that need to reach between the steps of an operation (patch a copy, freeze a filesystem); or the
node side over a FakeMounter, for unit tests of what it decides.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from csi_hostpath_selinux import loopdev
from csi_hostpath_selinux.backends import BACKENDS, Backend, BackendEnv
from csi_hostpath_selinux.backends import image as image_backend
from csi_hostpath_selinux.config import DriverConfig
from csi_hostpath_selinux.fake_mounts import FakeMounter
from csi_hostpath_selinux.group_snapshots import GroupSnapshots
from csi_hostpath_selinux.locks import OperationLocks
from csi_hostpath_selinux.metrics import Metrics
from csi_hostpath_selinux.models import AccessMode, AccessType, Capability, Staging
from csi_hostpath_selinux.mounting import NodeVolumes
from csi_hostpath_selinux.mounts import LinuxMounter
from csi_hostpath_selinux.selinux import SELinuxSupport
from csi_hostpath_selinux.snapshots import SnapshotManager
from csi_hostpath_selinux.state import Catalog
from csi_hostpath_selinux.volumes import CapacityRange, VolumeManager
from tests.support.driver import cleanup_under
from tests.support.freezing import thaw_if_frozen
from tests.support.requests import MIB

#: A node whose kernel has no SELinux.
NO_SELINUX = SELinuxSupport(False, False, False, False, None)


def fake_node(
    config: DriverConfig, catalog: Catalog, backends: Mapping[str, Backend]
) -> NodeVolumes:
    """The node side over the same catalog and kinds, with a FakeMounter on a node without
    SELinux (what start-up recovery sees on a node with nothing mounted)."""
    return NodeVolumes(
        config, catalog, backends, FakeMounter(), OperationLocks(), lambda: NO_SELINUX, Metrics()
    )


class InProcessDriver:
    """The domain objects the driver builds (catalog, every registered kind, volumes, snapshots,
    group snapshots) on a private state directory under root, with the real mounter."""

    def __init__(self, root: Path, kubelet_dir: str | None = None) -> None:
        self.root = root
        self.config = DriverConfig(
            node_id="test-node", state_dir=root / "state", kubelet_dir=kubelet_dir
        )
        self.config.state_dir.mkdir(parents=True)
        self.catalog = Catalog(self.config.catalog_path)
        self.mounter = LinuxMounter()
        env = BackendEnv(self.config.state_dir, self.mounter)
        self.backends: dict[str, Backend] = {k: cls(env) for k, cls in BACKENDS.items()}
        self.locks = OperationLocks()
        self.volumes = VolumeManager(self.config, self.catalog, self.backends, self.locks)
        self.snapshots = SnapshotManager(self.config, self.catalog, self.backends, self.locks)
        self.groups = GroupSnapshots(self.catalog, self.backends, self.locks, self.snapshots)
        #: Real paths of the staging mounts mounted_volume made (thawed by close()).
        self.staged: list[str] = []

    def staging_path(self, name: str) -> Path:
        """Where mounted_volume stages the volume called name."""
        return self.root / "staging" / name

    def mounted_volume(self, name: str) -> tuple[str, str]:
        """An ext4 volume, attached and mounted at its own staging directory, recorded staged;
        returns its id and staging path."""
        cap = Capability(
            access_type=AccessType.MOUNT, access_mode=AccessMode.SINGLE_NODE_WRITER, fs_type="ext4"
        )
        vol = self.volumes.create(name, CapacityRange(32 * MIB), [cap], {}, {}, None)
        staging = self.staging_path(name)
        staging.mkdir(parents=True)
        image = self.backends["image"]
        assert isinstance(image, image_backend.ImageBackend)
        device = loopdev.attach(str(image.image_path(vol.id))).path
        self.mounter.mount(device, str(staging), "ext4", [])
        self.staged.append(os.path.realpath(staging))
        self.catalog.put_staging(
            Staging(
                volume_id=vol.id,
                staging_path=str(staging),
                label=None,
                flags=(),
                device=device,
                access_type=AccessType.MOUNT,
            )
        )
        return vol.id, str(staging)

    def close(self) -> None:
        """Thaw what a failed test left frozen (before anything unmounts it); close the catalog."""
        for staging in self.staged:
            thaw_if_frozen(staging)
        self.catalog.close()


Env = TypeVar("Env", bound=InProcessDriver)


@contextmanager
def in_process(make: Callable[[Path], Env], root: Path) -> Iterator[Env]:
    """make(root), as root; afterwards (also when the test fails) close it and unmount and
    detach everything below root."""
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (loop devices and mounts)")
    env = make(root)
    try:
        yield env
    finally:
        env.close()
        cleanup_under(root)
