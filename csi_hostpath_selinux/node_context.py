"""What every node operation shares: its collaborators, request paths, and the node's records.

`NodeContext` holds the configuration, catalog, backends, mounter, mount table, locks, SELinux
probe and metrics, validates request paths, and keeps the catalog's stagings and publications
true to the mount table (a record whose mount is gone is dropped). The operations themselves
live in `staging`, `publishing` and `node_usage`; `mounting.NodeVolumes` puts them together.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from . import paths
from .backends import Backend
from .config import DriverConfig
from .errors import Internal, InvalidArgument, NotFound, StillInUse
from .locks import OperationLocks
from .metrics import Metrics
from .models import (
    AccessType,
    Capability,
    Publication,
    Staging,
    StagingState,
    Volume,
    is_volume_id,
)
from .mount_options import MountError
from .mounts import Mounter
from .mounttable import MountTable, MountView
from .selinux import SELinuxSupport, parse_mount_flags, same_label
from .state import Catalog, tolerate_full_disk


@dataclass(frozen=True)
class StageArgs:
    volume_id: str
    staging_path: str
    capability: Capability
    secrets: Mapping[str, str]
    #: The staging path is the driver's own (an inline volume's), under the state directory.
    internal: bool = False


@dataclass(frozen=True)
class PublishArgs:
    volume_id: str
    staging_path: str
    target_path: str
    capability: Capability
    read_only: bool
    internal: bool = False


@dataclass
class NodeContext:
    config: DriverConfig
    catalog: Catalog
    backends: Mapping[str, Backend]
    mounter: Mounter
    table: MountTable
    locks: OperationLocks
    probe: Callable[[], SELinuxSupport]
    metrics: Metrics

    def volume(self, volume_id: str) -> Volume:
        """The catalog's volume; INVALID_ARGUMENT without an id, NOT_FOUND for an unknown one.
        Only ids of the driver's own format are looked up, so a hostile id never reaches a path."""
        if not volume_id:
            raise InvalidArgument("volume_id is required")
        vol = self.catalog.volume(volume_id) if is_volume_id(volume_id) else None
        if vol is None:
            raise NotFound(f"volume {volume_id!r} does not exist on node {self.config.node_id}")
        return vol

    @property
    def ephemeral_dir(self) -> str:
        return str(self.config.state_dir / "ephemeral")

    def request_path(self, path: str, field: str, internal: bool = False) -> str:
        if internal:
            return paths.validate(path, field, self.ephemeral_dir)
        return paths.validate(path, field, self.config.kubelet_dir)

    def known_path(self, path: str, field: str) -> str:
        """path, validated like a request path (below kubelet's directory, or the driver's own
        ephemeral one); INVALID_ARGUMENT otherwise."""
        return self.request_path(path, field, paths.is_below(path, self.ephemeral_dir))

    def trusted(self, path: str) -> str | None:
        """The operator-configured directory path lies in (its own symlinks are trusted)."""
        return paths.trusted_prefix(path, self.config.kubelet_dir, self.ephemeral_dir)

    def view(self) -> MountView:
        """One read of the mount table, for the questions of one step of an operation."""
        return MountView.read(self.table, self.trusted)

    def mounted(self, path: str) -> bool:
        """Whether anything is mounted at path."""
        return self.view().at(path) is not None

    def gone(self, path: str, view: MountView | None = None) -> bool:
        """True when nothing is mounted at path any more (so its record can go).

        A path that cannot be reached right now (a parent renamed or missing) counts as gone only
        when no mount carries its name either: a mount we cannot see is not a mount that is gone.
        """
        view = view or self.view()
        reachable, entry = view.lookup(path)
        if reachable:
            return entry is None
        return view.named(path) is None

    def staging_alive(self, vol: Volume, st: Staging) -> bool:
        """True when a READY staging is really in place (a block staging: its recorded device
        still serves the volume, which a device name surviving a reboot does not prove); stale
        records are dropped."""
        if st.state is StagingState.READY:
            if vol.access_type is AccessType.BLOCK:
                alive = bool(st.device) and self.backends[vol.kind].serves(vol, st.device)
            else:
                alive = not self.gone(st.staging_path)
            if alive:
                return True
        with tolerate_full_disk(f"the stale staging of {st.volume_id} at {st.staging_path}"):
            self.catalog.remove_staging(st.volume_id, st.staging_path)
        return False

    def carries(self, pub: Publication, view: MountView | None = None) -> bool:
        """Whether pub's target still carries its volume: the one check (same device and root
        as the volume's staging mount) while the staging is recorded; without a staging record
        nothing can be compared, and any mount at the target keeps the publication."""
        view = view or self.view()
        st = next(
            (s for s in self.catalog.stagings(pub.volume_id) if s.staging_path == pub.staging_path),
            None,
        )
        if st is None:
            return not self.gone(pub.target_path, view)
        return view.volume_at(st, pub.target_path, pub.device) is not None

    def forget_publication(self, vol: Volume, pub: Publication) -> None:
        if pub.device:
            self.backends[vol.kind].release_publish_device(vol, pub.device)
        with tolerate_full_disk(f"the publication of {pub.volume_id} at {pub.target_path}"):
            self.catalog.remove_publication(pub.volume_id, pub.target_path)

    def drop_stale_records(self, vol: Volume) -> None:
        """Forget the volume's stagings and publications whose mounts are gone (the caller
        holds the volume's lock, so none of them is in progress)."""
        for pub in self.catalog.publications(vol.id):
            if self.gone(pub.target_path):
                self.forget_publication(vol, pub)
        for st in self.catalog.stagings(vol.id):
            self.staging_alive(vol, st)

    def backend_unstage(
        self, vol: Volume, backend: Backend, staging_path: str, device: str
    ) -> None:
        """The backend's unstage, given the staging path as a name its unmount cannot be
        redirected through (paths.unmount_name), never as the path string."""
        with paths.unmount_name(staging_path, self.trusted(staging_path)) as name:
            backend.unstage(vol, name, device)

    def unmount(self, path: str) -> None:
        """Unmount the topmost mount at path, through its held parent (paths.unmount_name)."""
        with paths.unmount_name(path, self.trusted(path)) as name:
            self.mounter.unmount(name)


def same_flags(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two lists of mount flags ask for the same mount: the same other flags in the same
    order, and the same SELinux labels however their categories are spelled."""
    fa, fb = parse_mount_flags(a), parse_mount_flags(b)
    if fa.other != fb.other:
        return False
    labels = ("context", "fscontext", "defcontext", "rootcontext")
    return all(same_label(_text(getattr(fa, key)), _text(getattr(fb, key))) for key in labels)


def _text(label: object | None) -> str | None:
    return None if label is None else str(label)


def unmount_failure(volume_id: str, path: str, exc: MountError) -> Exception:
    """EBUSY means a process still uses the mount: a state that passes, so the CO retries."""
    if exc.errno == errno.EBUSY:
        return StillInUse(volume_id, path)
    return Internal(f"unmounting volume {volume_id} from {path} failed: {exc.message}")
