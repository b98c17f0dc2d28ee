"""The contract every kind of volume keeps, checked over every kind the driver registers, the
test kind `fake` and the toy kind a vendor would write (tests/contract/toykind.py).

A vendor adding a kind runs this suite with the kind registered (docs/vendor-guide.md): a failure
names the part of the contract the kind breaks. Kinds whose storage is on a network server (nfs,
cifs) run every part that needs no server; the parts that create storage mount the server's share
and skip for them with that reason (the VM suite, tests/e2e, runs them against real servers).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from csi_hostpath_selinux.backends import (
    BACKENDS,
    Backend,
    BackendEnv,
    FakeBackend,
    register,
    unregister,
)
from csi_hostpath_selinux.backends.network import NetworkBackend
from csi_hostpath_selinux.errors import FailedPrecondition, InvalidArgument
from csi_hostpath_selinux.fake_mounts import FakeMounter
from csi_hostpath_selinux.models import (
    AccessType,
    HealthIssue,
    Volume,
    new_snapshot_id,
    new_volume_id,
)

from .toykind import ToyBackend

MIB = 1024 * 1024
SIZE = 16 * MIB
#: Every kind the driver serves, the test kind and the toy kind.
KINDS: list[type[Backend]] = [*BACKENDS.values(), FakeBackend, ToyBackend]
#: Parameters a volume of each network kind is stored with; the server never answers
#: (192.0.2.0/24 is TEST-NET-1, reserved for documentation, never routed).
NETWORK_PARAMETERS = {
    "nfs": {"server": "192.0.2.1", "share": "/export"},
    "cifs": {"source": "//192.0.2.1/share"},
}
NEEDS_SERVER = (
    "creating a volume of a network kind mounts the server's share, and no NFS or CIFS server "
    "runs on this host (tests/e2e runs these kinds against real servers in a VM)"
)


def over(kinds: list[type[Backend]]) -> pytest.MarkDecorator:
    """Run a test over the given kinds only (the ones the part of the contract applies to)."""
    return pytest.mark.parametrize("backend", kinds, ids=[k.kind for k in kinds], indirect=True)


SNAPSHOTTING = [k for k in KINDS if k.snapshot_suffix]
NOT_SNAPSHOTTING = [k for k in KINDS if not k.snapshot_suffix]
NETWORK: list[type[Backend]] = [k for k in KINDS if issubclass(k, NetworkBackend)]


@pytest.fixture(params=KINDS, ids=lambda cls: cls.kind)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The kind as the driver would serve it: the fake and the toy kind are registered with the
    documented call (backends.register) for the test, and unregistered after it."""
    cls: type[Backend] = request.param
    added = cls.kind not in BACKENDS
    if added:
        register(cls)
    try:
        yield BACKENDS[cls.kind](BackendEnv(tmp_path / "state", FakeMounter()))
    finally:
        if added:
            unregister(cls.kind)


def volume(backend: Backend, access: AccessType = AccessType.MOUNT, size: int = SIZE) -> Volume:
    fs_type = backend.check_fs_type("", access)
    parameters = {"kind": backend.kind, **NETWORK_PARAMETERS.get(backend.kind, {})}
    backend.check_parameters({k: v for k, v in parameters.items() if k != "kind"})
    return Volume(
        id=new_volume_id(),
        name=f"pvc-{time.monotonic_ns()}",
        kind=backend.kind,
        capacity_bytes=max(size, backend.minimum_bytes(fs_type)),
        access_type=access,
        fs_type=fs_type,
        parameters=parameters,
        content_source=None,
        ephemeral=False,
        created_at=time.time(),
    )


def local_only(backend: Backend) -> None:
    if isinstance(backend, NetworkBackend):
        pytest.skip(NEEDS_SERVER)


def entries(directory: Path) -> set[str]:
    return set(os.listdir(directory)) if directory.is_dir() else set()


def under(path: Path, root: Path) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)


@pytest.fixture
def created(backend: Backend) -> Iterator[Volume]:
    local_only(backend)
    vol = volume(backend)
    backend.create(vol, {}, None)
    yield vol
    backend.delete(vol, {})


# layout


def test_layout_paths_stay_under_the_state_dir(backend: Backend) -> None:
    for _ in range(20):
        path = backend.volume_path(new_volume_id())
        assert path is None or under(path, backend.env.volumes_dir)
        assert under(backend.snapshot_path(new_snapshot_id()), backend.env.snapshots_dir)
    if backend.stored_in_state_dir:
        assert backend.volume_path(new_volume_id()) is not None, (
            "a kind whose data is in the state directory names where (volume_path)"
        )


def test_create_writes_exactly_volume_path(backend: Backend, created: Volume) -> None:
    path = backend.volume_path(created.id)
    assert path is not None
    assert entries(backend.env.volumes_dir) == {path.name}
    assert backend.stored_volume_ids() == {created.id}
    assert backend.health(created) == []


def test_clone_source_is_what_create_wrote(backend: Backend, created: Volume) -> None:
    source = backend.clone_source(created)
    assert source is not None and os.path.lexists(source)
    clone = volume(backend)
    backend.create(clone, {}, source)
    try:
        assert backend.health(clone) == []
        assert backend.stored_volume_ids() == {created.id, clone.id}
    finally:
        backend.delete(clone, {})


@over(NETWORK)
def test_network_kinds_keep_nothing_in_the_state_dir(backend: Backend) -> None:
    vol = volume(backend)
    assert backend.volume_path(vol.id) is None
    assert backend.clone_source(vol) is None
    assert backend.stored_volume_ids() == set()


# idempotence


def test_delete_is_idempotent(backend: Backend) -> None:
    local_only(backend)
    never = volume(backend)
    backend.delete(never, {})  # never created: not an error
    vol = volume(backend)
    backend.create(vol, {}, None)
    backend.delete(vol, {})
    backend.delete(vol, {})
    assert entries(backend.env.volumes_dir) == set()
    assert backend.stored_volume_ids() == set()
    backend.remove_storage(vol.id)  # an orphan's removal is idempotent too


def test_create_after_delete_makes_the_volume_again(backend: Backend) -> None:
    local_only(backend)
    vol = volume(backend)
    backend.create(vol, {}, None)
    backend.delete(vol, {})
    backend.create(vol, {}, None)
    try:
        assert backend.health(vol) == []
    finally:
        backend.delete(vol, {})


# orphan scan


def test_orphan_scan_finds_its_own_volumes_and_nothing_else(tmp_path: Path) -> None:
    env = BackendEnv(tmp_path / "state", FakeMounter())
    local = [cls(env) for cls in KINDS if cls.stored_in_state_dir]
    mine: dict[str, Volume] = {}
    for other in local:
        # Image volumes as block volumes: the layout is the same, and no mkfs is needed.
        vol = volume(other, AccessType.BLOCK if other.supports_block else AccessType.MOUNT)
        other.create(vol, {}, None)
        mine[other.kind] = vol
    strays = [f"{new_volume_id()}.unknown", "lost+found", f"x{new_volume_id()}"]
    for name in strays:
        (env.volumes_dir / name).write_bytes(b"")
    try:
        for kind in local:
            assert kind.stored_volume_ids() == {mine[kind.kind].id}, kind.kind
        for kind in local:
            kind.remove_storage(mine[kind.kind].id)
            assert kind.stored_volume_ids() == set()
        assert entries(env.volumes_dir) == set(strays)
    finally:
        for kind in local:
            kind.delete(mine[kind.kind], {})


def test_orphan_removal_does_not_follow_a_planted_symlink(backend: Backend, tmp_path: Path) -> None:
    local_only(backend)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    vol_id = new_volume_id()
    path = backend.volume_path(vol_id)
    assert path is not None
    backend.env.volumes_dir.mkdir(parents=True)
    path.symlink_to(victim)
    backend.remove_storage(vol_id)
    assert not os.path.lexists(path)
    assert (victim / "keep").read_text() == "precious"


# snapshots


@over(SNAPSHOTTING)
def test_snapshot_writes_snapshot_path_and_restores_from_it(
    backend: Backend, created: Volume
) -> None:
    assert backend.can_snapshot()
    snap_id = new_snapshot_id()
    dest = backend.snapshot_path(snap_id)
    size = backend.snapshot(created, dest, None)
    assert os.path.lexists(dest) and size >= 0
    assert backend.stored_snapshot_ids() == {snap_id}
    restored = volume(backend)
    backend.create(restored, {}, dest)
    try:
        assert backend.health(restored) == []
    finally:
        backend.delete(restored, {})


@over(NOT_SNAPSHOTTING)
def test_a_kind_without_snapshots_refuses_them(backend: Backend) -> None:
    assert not backend.can_snapshot()
    vol = volume(backend)
    with pytest.raises(FailedPrecondition):
        backend.snapshot(vol, backend.snapshot_path(new_snapshot_id()), None)
    assert backend.stored_snapshot_ids() == set()


# health


def test_health_of_missing_storage_reports_an_issue(backend: Backend) -> None:
    issues = backend.health(volume(backend))  # never created (network: a server that is gone)
    assert issues and all(isinstance(i, HealthIssue) and i.message for i in issues)


def test_health_of_deleted_storage_reports_an_issue(backend: Backend, created: Volume) -> None:
    backend.delete(created, {})
    assert backend.health(created)


# declared capabilities agree with behaviour


def test_block_support_is_what_it_declares(backend: Backend) -> None:
    if not backend.supports_block:
        with pytest.raises(InvalidArgument):
            backend.check_fs_type("", AccessType.BLOCK)
        return
    local_only(backend)
    vol = volume(backend, AccessType.BLOCK)
    backend.create(vol, {}, None)
    try:
        assert backend.health(vol) == []
        assert not backend.can_freeze(vol), "a raw block volume has no filesystem to freeze"
    finally:
        backend.delete(vol, {})


def test_label_capability_is_explained(backend: Backend) -> None:
    if not backend.can_label:
        assert backend.no_label_reason, "a kind that cannot label says why, for the pod author"


def test_expansion_answers_what_node_expansion_declares(backend: Backend) -> None:
    if isinstance(backend, NetworkBackend):
        vol = volume(backend)  # growing a share's directory needs no server
        assert backend.expand(vol, vol.capacity_bytes * 2) is backend.node_expansion
        return
    vol = volume(backend)
    backend.create(vol, {}, None)
    try:
        assert backend.expand(vol, vol.capacity_bytes * 2) is backend.node_expansion
        grown = dataclasses.replace(vol, capacity_bytes=vol.capacity_bytes * 2)
        assert backend.health(grown) == []
    finally:
        backend.delete(vol, {})


def test_raw_block_snapshots_need_block_volumes_and_snapshots(backend: Backend) -> None:
    if backend.raw_block_snapshots:
        assert backend.supports_block and backend.can_snapshot()


# registration


def test_register_serves_the_toy_kind_and_refuses_clashes() -> None:
    assert "toy" not in BACKENDS
    register(ToyBackend)
    try:
        assert BACKENDS["toy"] is ToyBackend
        register(ToyBackend)  # registering the same class again is fine

        class Clash(ToyBackend):
            kind = "toy2"

        with pytest.raises(ValueError, match="volume_suffix"):
            register(Clash)
        assert "toy2" not in BACKENDS
    finally:
        unregister("toy")
    assert "toy" not in BACKENDS


def test_the_fake_kind_is_not_served_unless_asked_for() -> None:
    assert "fake" not in BACKENDS or os.environ.get("CSI_HOSTPATH_SELINUX_FAKE_KIND") == "1"
