"""The node layer's SELinux decisions for network volumes, with a fake mounter and a fake probe.

The host kernel here has SELinux off and no NFS client, so these run the real NodeVolumes and NFS
and CIFS backends against FakeMounter (recording every helper call) and an SELinux probe that
says what a node would. The VM suite proves the same flows against a real kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux import node_labels, publishing
from csi_hostpath_selinux.backends import BACKENDS, Backend, BackendEnv
from csi_hostpath_selinux.config import DriverConfig
from csi_hostpath_selinux.errors import (
    AlreadyExists,
    FailedPrecondition,
    LabelInUse,
    StagedElsewhere,
    StagedIncompatibly,
)
from csi_hostpath_selinux.fake_mounts import FakeMounter
from csi_hostpath_selinux.locks import OperationLocks
from csi_hostpath_selinux.metrics import Metrics
from csi_hostpath_selinux.models import AccessMode, AccessType, Capability, Volume
from csi_hostpath_selinux.mounting import NodeVolumes, PublishArgs, StageArgs
from csi_hostpath_selinux.selinux import InvalidMountFlags, SELinuxSupport, label_from_super_options
from csi_hostpath_selinux.state import Catalog
from csi_hostpath_selinux.status import status_of
from tests.support.fake_calls import helper_calls

L1 = "system_u:object_r:container_file_t:s0:c1,c2"
L2 = "system_u:object_r:container_file_t:s0:c3,c4"
SELINUX_NODE = SELinuxSupport(True, True, True, True, True)
HIDDEN_SELINUXFS = SELinuxSupport(True, False, False, True, None)
NO_SELINUX = SELinuxSupport(False, False, False, False, None)


@dataclass
class World:
    node: NodeVolumes
    fake: FakeMounter
    catalog: Catalog
    kubelet: Path
    support: list[SELinuxSupport]
    metrics: Metrics

    def volume(self, kind: str, **params: str) -> Volume:
        vol = Volume(
            id=f"vol-{len(self.catalog.all_volumes()):032x}",
            name=f"pvc-{kind}-{len(params)}",
            kind=kind,
            capacity_bytes=1 << 30,
            access_type=AccessType.MOUNT,
            fs_type=kind,
            parameters={"kind": kind, **params},
        )
        self.catalog.add_volume(vol)
        return vol

    def stage(self, vol: Volume, label: str | None, path: str = "globalmount") -> str:
        """Stage vol as kubelet does for a pod with label (None: no seLinuxOptions.level)."""
        return self.stage_with_flags(vol, (f'context="{label}"',) if label else (), path)

    def stage_with_flags(
        self, vol: Volume, flags: tuple[str, ...], path: str = "globalmount"
    ) -> str:
        staging = str(self.kubelet / "plugins" / f"{vol.id}-{path}")
        secrets = {"username": "u", "password": "p4ss"}
        self.node.stage(StageArgs(vol.id, staging, mount_capability(flags), secrets))
        return staging

    def publish(self, vol: Volume, staging: str, label: str, pod: str = "uid") -> None:
        """Publish vol for a pod with label at the pod's own target path."""
        self.publish_with_flags(vol, staging, (f'context="{label}"',), pod)

    def publish_with_flags(
        self, vol: Volume, staging: str, flags: tuple[str, ...], pod: str = "uid"
    ) -> None:
        target = self.kubelet / "pods" / pod / "mount"
        target.parent.mkdir(exist_ok=True)
        args = PublishArgs(vol.id, staging, str(target), mount_capability(flags), False)
        self.node.publish(args)


def mount_capability(flags: tuple[str, ...]) -> Capability:
    return Capability(
        access_type=AccessType.MOUNT,
        access_mode=AccessMode.SINGLE_NODE_WRITER,
        fs_type="",
        mount_flags=flags,
    )


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    kubelet = tmp_path / "kubelet"
    (kubelet / "plugins").mkdir(parents=True)
    (kubelet / "pods").mkdir()
    config = DriverConfig(node_id="n1", state_dir=tmp_path / "state", kubelet_dir=str(kubelet))
    fake = FakeMounter()
    catalog = Catalog(tmp_path / "catalog.sqlite")
    env = BackendEnv(config.state_dir, fake)
    backends: dict[str, Backend] = {k: cls(env) for k, cls in BACKENDS.items()}
    support = [SELINUX_NODE]
    metrics = Metrics()
    node = NodeVolumes(
        config, catalog, backends, fake, OperationLocks(), lambda: support[0], metrics, fake
    )

    def fake_verify(path: str, super_options: tuple[str, ...], expected: object, s: object) -> None:
        # What the kernel would show: the helper's options are the mount's super options.
        assert label_from_super_options(super_options) == str(expected)

    monkeypatch.setattr(node_labels, "verify_mounted_label", fake_verify)
    yield World(node, fake, catalog, kubelet, support, metrics)
    catalog.close()


def test_labelled_nfs_mount_gets_nosharecache_and_the_whole_quoted_label(world: World) -> None:
    vol = world.volume("nfs", server="10.0.0.5", share="/exports")
    staging = world.stage(vol, L1)
    ((source, target, fs_type, options, env),) = helper_calls(world.fake)
    assert (source, fs_type) == (f"10.0.0.5:/exports/{vol.id}", "nfs")
    # mount(8) follows symlinks in its target: it mounts in the driver's own work directory,
    # and the mount is then attached onto the staging directory opened without following any.
    assert str(target).startswith(str(world.node.config.state_dir / "work") + "/")
    staged = world.fake.mount_at(staging)
    assert staged is not None and staged.kind == "bind" and staged.fs_type == "nfs"
    assert world.fake.mount_at(str(target)) is None, "the private helper mount is gone"
    assert f'context="{L1}"' in options, "the label is one option, quotes and comma kept"
    assert "nosharecache" in options
    assert env == {}
    assert world.metrics.counter("selinux_labelled_mounts_total") == 1


def test_cifs_credentials_go_to_the_environment_only(world: World) -> None:
    vol = world.volume("cifs", source="//files.example/share")
    world.stage(vol, L1)
    ((source, _, fs_type, options, env),) = helper_calls(world.fake)
    assert (source, fs_type) == (f"//files.example/share/{vol.id}", "cifs")
    assert "nosharesock" in options
    assert env["USER"] == "u" and env["PASSWD"] == "p4ss"
    assert not any("p4ss" in str(o) for o in options), "the password never reaches argv"


def test_another_label_is_refused_before_anything_is_mounted(world: World) -> None:
    vol = world.volume("nfs", server="nfs.example", share="/srv")
    staging = world.stage(vol, L1)
    calls_before = len(world.fake.calls)
    with pytest.raises(AlreadyExists) as again:
        world.stage(vol, L2)
    assert L1 in again.value.message and L2 in again.value.message
    with pytest.raises(FailedPrecondition) as publish:
        world.publish(vol, staging, L2)
    assert "seLinuxChangePolicy: Recursive" in publish.value.message
    assert len(world.fake.calls) == calls_before, "refusals happen before any mount call"
    assert world.metrics.counter("selinux_label_conflicts_total") == 2


@pytest.mark.parametrize(
    ("support", "words"),
    [
        (HIDDEN_SELINUXFS, "/sys/fs/selinux"),
        (NO_SELINUX, "SELinux is disabled on node n1"),
    ],
)
def test_no_labelled_helper_mount_when_the_label_would_be_lost(
    world: World, support: SELinuxSupport, words: str
) -> None:
    world.support[0] = support
    vol = world.volume("nfs", server="nfs.example", share="/srv")
    with pytest.raises(FailedPrecondition) as refused:
        world.stage(vol, L1)
    assert words in refused.value.message
    assert helper_calls(world.fake) == []
    assert world.catalog.stagings() == [], "a refused stage leaves no record"


def test_unlabelled_helper_mount_needs_no_selinux(world: World) -> None:
    world.support[0] = NO_SELINUX
    vol = world.volume("nfs", server="nfs.example", share="/srv")
    world.stage(vol, None)
    ((_, _, _, options, _),) = helper_calls(world.fake)
    assert "nosharecache" not in options and not any("context" in o for o in options)


# A StorageClass that sets context= in its mountOptions: kubelet appends the pod's label after it.

SVIRT = "system_u:object_r:svirt_lxc_file_t:s0:c1,c2"
CUSTOM = "system_u:object_r:acme_volume_t:s0:c1,c2"


def publish_with_flags(world: World, vol: Volume, staging: str, flags: tuple[str, ...]) -> None:
    """Publish as kubelet does, with the bind mount reading the staged label (as the kernel
    would show it)."""
    (staged,) = world.catalog.stagings(vol.id)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(publishing, "read_label", lambda path: staged.label)
        world.publish_with_flags(vol, staging, flags)


def test_site_default_label_from_the_storage_class_alone(world: World) -> None:
    """A pod without seLinuxOptions.level: kubelet sends only the StorageClass's context=."""
    vol = world.volume("nfs", server="nfs.example", share="/srv")
    flags = ("nfsvers=4.2", f"context={L1}")  # as an administrator writes it, unquoted
    staging = world.stage_with_flags(vol, flags)
    ((_, _, _, options, _),) = helper_calls(world.fake)
    assert [o for o in options if "context" in o] == [f'context="{L1}"']
    assert [s.label for s in world.catalog.stagings(vol.id)] == [L1]
    publish_with_flags(world, vol, staging, flags)
    assert len(world.catalog.publications(vol.id)) == 1


@pytest.mark.parametrize("pod", [L1, "system_u:object_r:container_file_t:s0:c2,c1"])
def test_storage_class_label_equal_to_the_pods_is_mounted_once(world: World, pod: str) -> None:
    vol = world.volume("nfs", server="nfs.example", share="/srv")
    flags = (f"context={L1}", f'context="{pod}"')
    staging = world.stage_with_flags(vol, flags)
    ((_, _, _, options, _),) = helper_calls(world.fake)
    assert len([o for o in options if "context" in o]) == 1
    publish_with_flags(world, vol, staging, flags)
    assert world.metrics.counter("selinux_label_conflicts_total") == 0


def test_storage_class_label_other_than_the_pods_is_refused_before_mounting(world: World) -> None:
    vol = world.volume("nfs", server="nfs.example", share="/srv")
    with pytest.raises(InvalidMountFlags) as info:
        world.stage_with_flags(vol, (f"context={L1}", f'context="{L2}"'))
    assert f'context="{L1}", given first' in info.value.message
    assert f'context="{L2}", given last' in info.value.message
    assert helper_calls(world.fake) == []
    assert world.catalog.stagings() == []


@pytest.mark.parametrize(("first", "second"), [(SVIRT, L1), (CUSTOM, SVIRT), (L1, CUSTOM)])
def test_types_other_than_container_file_t(world: World, first: str, second: str) -> None:
    """Nothing assumes container_file_t: a volume staged with any type keeps it, shares it with
    pods of the same label, and refuses another type naming both."""
    vol = world.volume("nfs", server="nfs.example", share="/srv")
    staging = world.stage(vol, first)
    ((_, _, _, options, _),) = helper_calls(world.fake)
    assert f'context="{first}"' in options
    publish_with_flags(world, vol, staging, (f'context="{first}"',))
    with pytest.raises(FailedPrecondition) as info:
        world.publish(vol, staging, second, pod="uid2")
    first_type, second_type = first.split(":")[2], second.split(":")[2]
    assert first in info.value.message and second in info.value.message
    assert f"seLinuxOptions.type ({first_type} versus {second_type})" in info.value.message


# One label, one spelling: stagings and publications store the kernel's canonical form.

L1_REORDERED = "system_u:object_r:container_file_t:s0:c2,c1"


def test_a_label_is_stored_canonical_and_its_spellings_compare_equal(world: World) -> None:
    vol = world.volume("nfs", server="nfs.example", share="/srv")
    staging = world.stage(vol, L1_REORDERED)
    (st,) = world.catalog.stagings(vol.id)
    assert st.label == L1, "the staging records the canonical label"
    world.stage(vol, L1)  # the same label spelled otherwise: the same staging, a retry
    assert len(helper_calls(world.fake)) == 1, "nothing mounted twice"
    publish_with_flags(world, vol, staging, (f'context="{L1_REORDERED}"',))
    (pub,) = world.catalog.publications(vol.id)
    assert pub.label == L1, "the publication records the canonical label"


def test_label_conflicts_have_one_code_per_condition(world: World) -> None:
    """Same path, other label: the spec's "Volume published but is incompatible" (ALREADY_EXISTS).
    Another path or a publish with another label: the volume is in use with another label on
    this node (FAILED_PRECONDITION, succeeds once its users are gone)."""
    vol = world.volume("nfs", server="nfs.example", share="/srv")
    staging = world.stage(vol, L1)
    stage_rpc = "/csi.v1.Node/NodeStageVolume"
    with pytest.raises(StagedIncompatibly) as same_path:
        world.stage(vol, L2)
    assert status_of(stage_rpc, same_path.value).code is grpc.StatusCode.ALREADY_EXISTS
    assert same_path.value.staging_path == staging
    with pytest.raises(LabelInUse) as other_path:
        world.stage(vol, L2, path="elsewhere")
    assert status_of(stage_rpc, other_path.value).code is grpc.StatusCode.FAILED_PRECONDITION
    assert (other_path.value.in_use, other_path.value.requested) == (L1, L2)
    with pytest.raises(StagedElsewhere) as elsewhere:
        world.stage(vol, L1, path="elsewhere")
    assert elsewhere.value.staged_at == staging
    with pytest.raises(LabelInUse) as publish:
        world.publish(vol, staging, L2)
    code = status_of("/csi.v1.Node/NodePublishVolume", publish.value).code
    assert code is grpc.StatusCode.FAILED_PRECONDITION
