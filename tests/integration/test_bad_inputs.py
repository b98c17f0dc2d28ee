"""Bad input → status code → message: the table in the README, checked against the real driver.

Every row sends one bad request and asserts the code and the words a pod author reads; nothing on
disk may change (the staging and target paths stay absent, nothing new is mounted).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux.mountinfo import read_mountinfo
from tests.support.driver import Clients, DriverProcess
from tests.support.requests import (
    GIB,
    L1,
    L2,
    MIB,
    AccessModeValue,
    context_flag,
    create,
    mount_cap,
)

pytestmark = pytest.mark.integration

C = grpc.StatusCode
MNMW = pb.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER
TOPOLOGY_KEY = "topology.hostpath-selinux.csi/node"
MADE_UP_TOKEN = "abc"


@dataclass(frozen=True)
class Env:
    csi: Clients
    kubelet: Path
    volume_id: str  # an ext4 volume, created and not staged


@dataclass(frozen=True)
class Row:
    what: str
    call: Callable[[Env], object]
    code: grpc.StatusCode
    words: str


def stage(env: Env, path: str | None = None, flags: tuple[str, ...] = (), vol: str = "") -> object:
    return env.csi.node.NodeStageVolume(
        pb.NodeStageVolumeRequest(
            volume_id=vol or env.volume_id,
            staging_target_path=path if path is not None else str(env.kubelet / "plugins" / "s"),
            volume_capability=mount_cap("ext4", flags),
        )
    )


def publish(env: Env, target: str, staging: str = "") -> object:
    return env.csi.node.NodePublishVolume(
        pb.NodePublishVolumeRequest(
            volume_id=env.volume_id,
            staging_target_path=staging or str(env.kubelet / "plugins" / "s"),
            target_path=target,
            volume_capability=mount_cap("ext4"),
        )
    )


def create_req(
    *,
    name: str | None = None,
    params: Mapping[str, str] | None = None,
    mode: AccessModeValue | None = None,
    fs: str | None = None,
    required: int | None = None,
    limit: int | None = None,
    requisite_node: str | None = None,
) -> pb.CreateVolumeRequest:
    """A valid CreateVolume request for an ext4 volume with the fields given changed."""
    req = create("pvc-bad", mount_cap("ext4"))
    if name is not None:
        req.name = name
    if params is not None:
        req.parameters.update(params)
    if mode is not None:
        req.volume_capabilities[0].access_mode.mode = mode
    if fs is not None:
        req.volume_capabilities[0].mount.fs_type = fs
    if required is not None:
        req.capacity_range.required_bytes = required
    if limit is not None:
        req.capacity_range.limit_bytes = limit
    if requisite_node is not None:
        req.accessibility_requirements.requisite.add().segments[TOPOLOGY_KEY] = requisite_node
    return req


def a_regular_file(env: Env) -> Path:
    path = env.kubelet / "pods" / "file"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a directory")
    return path


def symlinked_target(env: Env) -> object:
    """A staged volume, and a symlink to /etc planted where kubelet's target should be."""
    staging = str(env.kubelet / "plugins" / "sym")
    stage(env, staging)
    pod = env.kubelet / "pods" / "evil"
    pod.mkdir(parents=True, exist_ok=True)
    link = pod / "mount"
    link.symlink_to("/etc")
    try:
        return publish(env, str(link), staging)
    finally:
        env.csi.node.NodeUnstageVolume(
            pb.NodeUnstageVolumeRequest(volume_id=env.volume_id, staging_target_path=staging)
        )
        assert link.is_symlink() and os.path.isdir("/etc"), (
            "the planted link and /etc are untouched"
        )


ROWS = [
    Row(
        "CreateVolume without a name",
        lambda e: e.csi.controller.CreateVolume(create_req(name="")),
        C.INVALID_ARGUMENT,
        "name is required",
    ),
    Row(
        "CreateVolume with a name over 253 characters",
        lambda e: e.csi.controller.CreateVolume(create_req(name="n" * 254)),
        C.INVALID_ARGUMENT,
        "at most 253 characters",
    ),
    Row(
        "CreateSnapshot with a name over 253 characters",
        lambda e: e.csi.controller.CreateSnapshot(
            pb.CreateSnapshotRequest(name="s" * 3_000_000, source_volume_id=e.volume_id)
        ),
        C.INVALID_ARGUMENT,
        "at most 253 characters",
    ),
    Row(
        "CreateVolumeGroupSnapshot with a name over 253 characters",
        lambda e: e.csi.group.CreateVolumeGroupSnapshot(
            pb.CreateVolumeGroupSnapshotRequest(name="g" * 254, source_volume_ids=[e.volume_id])
        ),
        C.INVALID_ARGUMENT,
        "at most 253 characters",
    ),
    Row(
        "CreateVolume without capabilities",
        lambda e: e.csi.controller.CreateVolume(pb.CreateVolumeRequest(name="x")),
        C.INVALID_ARGUMENT,
        "volume_capabilities is required",
    ),
    Row(
        "CreateVolume ReadWriteMany",
        lambda e: e.csi.controller.CreateVolume(create_req(mode=MNMW)),
        C.INVALID_ARGUMENT,
        "MULTI_NODE_MULTI_WRITER is not supported",
    ),
    Row(
        "CreateVolume with an unknown kind",
        lambda e: e.csi.controller.CreateVolume(create_req(params={"kind": "tape"})),
        C.INVALID_ARGUMENT,
        "unknown volume kind 'tape'",
    ),
    Row(
        "CreateVolume with an unknown parameter",
        lambda e: e.csi.controller.CreateVolume(create_req(params={"speed": "fast"})),
        C.INVALID_ARGUMENT,
        "unknown parameter 'speed'",
    ),
    Row(
        "CreateVolume with fsType btrfs",
        lambda e: e.csi.controller.CreateVolume(create_req(fs="btrfs")),
        C.INVALID_ARGUMENT,
        "fsType 'btrfs' is not supported",
    ),
    Row(
        "CreateVolume required > limit",
        lambda e: e.csi.controller.CreateVolume(create_req(required=2 * GIB, limit=GIB)),
        C.INVALID_ARGUMENT,
        "larger than limit_bytes",
    ),
    Row(
        "CreateVolume larger than --max-volume-size",
        lambda e: e.csi.controller.CreateVolume(create_req(required=2048 * GIB)),
        C.OUT_OF_RANGE,
        "largest volume",
    ),
    Row(
        "CreateVolume xfs below its minimum",
        lambda e: e.csi.controller.CreateVolume(
            create_req(fs="xfs", required=16 * MIB, limit=32 * MIB)
        ),
        C.OUT_OF_RANGE,
        "filesystem's minimum",
    ),
    Row(
        "CreateVolume of an existing name, other size",
        lambda e: e.csi.controller.CreateVolume(create_req(name="pvc-existing", required=GIB)),
        C.ALREADY_EXISTS,
        "already exists with capacity",
    ),
    Row(
        "CreateVolume for another node's topology",
        lambda e: e.csi.controller.CreateVolume(create_req(requisite_node="other")),
        C.RESOURCE_EXHAUSTED,
        "only provisions on node test-node",
    ),
    Row(
        "CreateVolume of a CIFS volume without secrets",
        lambda e: e.csi.controller.CreateVolume(
            create_req(fs="", params={"kind": "cifs", "source": "//127.0.0.1/share"})
        ),
        C.INVALID_ARGUMENT,
        "csi.storage.k8s.io/provisioner-secret-name",
    ),
    Row(
        "CreateVolume of an NFS volume with remount in mountOptions",
        lambda e: e.csi.controller.CreateVolume(
            create_req(
                fs="",
                params={
                    "kind": "nfs",
                    "server": "127.0.0.1",
                    "share": "/srv",
                    "mountOptions": "vers=4.2,remount",
                },
            )
        ),
        C.INVALID_ARGUMENT,
        "parameter mountOptions",
    ),
    Row(
        "NodeStageVolume of an id with '..'",
        lambda e: stage(e, vol="../../etc"),
        C.NOT_FOUND,
        "does not exist on node",
    ),
    Row(
        "NodeStageVolume, relative staging path",
        lambda e: stage(e, "plugins/s"),
        C.INVALID_ARGUMENT,
        "must be an absolute path",
    ),
    Row(
        "NodeStageVolume, staging path with '..'",
        lambda e: stage(e, str(e.kubelet / "plugins" / ".." / ".." / "x")),
        C.INVALID_ARGUMENT,
        "normalized",
    ),
    Row(
        "NodeStageVolume outside --kubelet-dir",
        lambda e: stage(e, "/tmp/elsewhere"),
        C.INVALID_ARGUMENT,
        "not below kubelet's directory",
    ),
    Row(
        "NodeStageVolume, context without its closing quote",
        lambda e: stage(e, flags=('context="' + L1,)),
        C.INVALID_ARGUMENT,
        "context",
    ),
    Row(
        "NodeStageVolume, a label that is not user:role:type:level",
        lambda e: stage(e, flags=('context="system_u:object_r:container_file_t"',)),
        C.INVALID_ARGUMENT,
        "context",
    ),
    Row(
        "NodeStageVolume, a StorageClass context other than the pod's",
        lambda e: stage(e, flags=(f"context={L1}", context_flag(L2))),
        C.INVALID_ARGUMENT,
        "remove context= from the StorageClass's mountOptions",
    ),
    Row(
        "NodeStageVolume, text after a quoted context",
        lambda e: stage(e, flags=(f'context="{L1}","b"',)),
        C.INVALID_ARGUMENT,
        "follows a quoted SELinux label",
    ),
    Row(
        "NodeStageVolume, uhelper=",
        lambda e: stage(e, flags=("uhelper=udisks2",)),
        C.INVALID_ARGUMENT,
        "uhelper",
    ),
    Row(
        "NodeStageVolume, an option naming another device",
        lambda e: stage(e, flags=("journal_path=/dev/sda1",)),
        C.INVALID_ARGUMENT,
        "journal_path",
    ),
    Row(
        "NodeStageVolume, context with fscontext",
        lambda e: stage(e, flags=(context_flag(L1), f'fscontext="{L2}"')),
        C.INVALID_ARGUMENT,
        "fscontext",
    ),
    Row(
        "NodeStageVolume, a bind option",
        lambda e: stage(e, flags=("bind",)),
        C.INVALID_ARGUMENT,
        "bind",
    ),
    Row(
        "NodeStageVolume with a label, SELinux off",
        lambda e: stage(e, flags=(context_flag(L1),)),
        C.FAILED_PRECONDITION,
        "SELinux is disabled on node test-node",
    ),
    Row(
        "NodePublishVolume before NodeStageVolume",
        lambda e: publish(e, str(e.kubelet / "pods" / "p")),
        C.FAILED_PRECONDITION,
        "is not staged at",
    ),
    Row(
        "NodePublishVolume with the staging path as target",
        lambda e: publish(e, str(e.kubelet / "plugins" / "s")),
        C.INVALID_ARGUMENT,
        "publication needs a directory of its own",
    ),
    Row(
        "NodeGetVolumeStats outside --kubelet-dir",
        lambda e: e.csi.node.NodeGetVolumeStats(
            pb.NodeGetVolumeStatsRequest(volume_id=e.volume_id, volume_path="/proc")
        ),
        C.NOT_FOUND,
        "not below kubelet's directory",
    ),
    Row(
        "NodeExpandVolume outside --kubelet-dir",
        lambda e: e.csi.node.NodeExpandVolume(
            pb.NodeExpandVolumeRequest(
                volume_id=e.volume_id,
                volume_path="/proc",
                capacity_range=pb.CapacityRange(required_bytes=GIB),
            )
        ),
        C.NOT_FOUND,
        "not below kubelet's directory",
    ),
    Row(
        "NodeGetVolumeStats through a regular file",
        lambda e: e.csi.node.NodeGetVolumeStats(
            pb.NodeGetVolumeStatsRequest(
                volume_id=e.volume_id, volume_path=str(a_regular_file(e) / "x")
            )
        ),
        C.NOT_FOUND,
        "is not mounted at",
    ),
    Row(
        "NodeGetVolumeHealth outside --kubelet-dir",
        lambda e: e.csi.node.NodeGetVolumeHealth(
            pb.NodeGetVolumeHealthRequest(volume_id=e.volume_id, volume_publish_path="/proc")
        ),
        C.INVALID_ARGUMENT,
        "not below kubelet's directory",
    ),
    Row(
        "NodePublishVolume onto a planted symlink",
        symlinked_target,
        C.INVALID_ARGUMENT,
        "symbolic link",
    ),
    Row(
        "ListVolumes with a made-up token",
        lambda e: e.csi.controller.ListVolumes(pb.ListVolumesRequest(starting_token=MADE_UP_TOKEN)),
        C.ABORTED,
        "not a token this driver handed out",
    ),
    Row(
        "ControllerPublishVolume",
        lambda e: e.csi.controller.ControllerPublishVolume(
            pb.ControllerPublishVolumeRequest(volume_id=e.volume_id, node_id="n")
        ),
        C.UNIMPLEMENTED,
        "attachRequired: false",
    ),
    Row(
        "ControllerModifyVolume with a parameter",
        lambda e: e.csi.controller.ControllerModifyVolume(
            pb.ControllerModifyVolumeRequest(
                volume_id=e.volume_id, mutable_parameters={"iops": "9"}
            )
        ),
        C.INVALID_ARGUMENT,
        "mutable parameter 'iops' is not supported",
    ),
]


@pytest.fixture
def env(csi: Clients, driver: DriverProcess) -> Env:
    kubelet = driver.root.parent / "kubelet"
    vol = csi.controller.CreateVolume(create("pvc-existing", mount_cap("ext4"), 64 * MIB)).volume
    return Env(csi, kubelet, vol.volume_id)


@pytest.mark.parametrize("row", ROWS, ids=[r.what for r in ROWS])
def test_bad_input(env: Env, row: Row) -> None:
    with pytest.raises(grpc.RpcError) as info:
        row.call(env)
    assert info.value.code() == row.code, info.value.details()
    assert row.words in (info.value.details() or "")
    test_root = str(env.kubelet.parent)
    left = [m.mount_point for m in read_mountinfo() if m.mount_point.startswith(test_root)]
    assert not left, f"a refused request left mounts: {left}"
    assert not os.path.exists(env.kubelet / "plugins" / "s"), "a refused stage created its path"
    env.csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=env.volume_id))


def test_readme_lists_every_row() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [r.what for r in ROWS if f"| {r.what} |" not in readme]
    assert not missing, f"README's bad-input table lacks: {missing}"
