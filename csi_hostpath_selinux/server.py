"""Wiring: build the driver's services on a gRPC server, start it, and stop it gracefully."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sqlite3
import stat
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from . import catalog_guard, intents, statedir
from ._proto import csi_pb2_grpc as rpc
from .backends import BACKENDS, Backend, BackendEnv
from .config import DriverConfig
from .controller import ControllerService
from .ephemeral import EphemeralVolumes
from .group_controller import GroupControllerService
from .group_snapshots import GroupSnapshots
from .health import HealthChecker
from .identity import IdentityService
from .interceptor import DriverInterceptor
from .locks import OperationLocks
from .metrics import Metrics, serve
from .mounting import NodeVolumes
from .mounts import LinuxMounter, Mounter
from .node import NodeService
from .recovery import reconcile
from .selinux import probe_support
from .snapshot_metadata import SnapshotMetadataReader, SnapshotMetadataService
from .snapshots import SnapshotManager
from .state import Catalog, CatalogError
from .volumes import VolumeManager

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

log = logging.getLogger(__name__)


class EndpointError(Exception):
    """The endpoint flag cannot be served."""


@dataclass
class Driver:
    config: DriverConfig
    catalog: Catalog
    server: grpc.Server
    address: str
    socket_path: Path | None
    metrics: Metrics
    metrics_server: ThreadingHTTPServer | None = None
    #: The state directory's lock (statedir.lock), held until stop() has finished.
    lock_fd: int | None = None

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight calls finish within grace seconds, clean up."""
        self.server.stop(self.config.grace_seconds if grace is None else grace).wait()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        self.catalog.close()
        if self.socket_path is not None:
            remove_socket(self.socket_path)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        log.info("stopped")


def parse_endpoint(endpoint: str) -> tuple[str, Path | None]:
    """The grpc address for endpoint, and the unix socket path when it is one."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://") :]
        if not path.startswith("/"):
            raise EndpointError(f"unix endpoint {endpoint!r} needs an absolute path")
        return f"unix:{path}", Path(path)
    if endpoint.startswith("tcp://"):
        return endpoint[len("tcp://") :], None
    raise EndpointError(f"endpoint {endpoint!r} must start with unix:// or tcp://")


def remove_socket(path: Path) -> None:
    """Remove a stale socket; refuse to remove anything that is not a socket."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise EndpointError(f"{path} exists and is not a socket; refusing to remove it")
    path.unlink()


def damaged(config: DriverConfig, exc: sqlite3.DatabaseError) -> CatalogError:
    return CatalogError(
        f"refusing to start: the catalog {config.catalog_path} cannot be read ({exc}): it is "
        f"damaged. Nothing was changed. Restore {config.catalog_path.name} together with its "
        "-wal file from a backup (sqlite3's .recover may save its rows into a new file)"
    )


def build(config: DriverConfig, mounter: Mounter | None = None) -> Driver:
    """Open the state, reconcile it with the node, and start serving; return the running driver."""
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_fd = statedir.lock(config.state_dir)
    try:
        return _build(config, lock_fd, mounter)
    except BaseException:
        os.close(lock_fd)
        raise


def _build(config: DriverConfig, lock_fd: int, mounter: Mounter | None) -> Driver:
    reserve = statedir.Reserve(config.state_dir)
    reserve.start()
    try:
        catalog = Catalog(
            config.catalog_path,
            before_write=reserve.before_write,
            sync_dirs=intents.sync_dirs(config.state_dir),
        )
    except sqlite3.DatabaseError as exc:
        raise damaged(config, exc) from exc
    try:
        catalog_guard.check(catalog, config.state_dir)
    except sqlite3.DatabaseError as exc:
        catalog.close()
        raise damaged(config, exc) from exc
    except BaseException:
        catalog.close()
        raise
    mounter = mounter or LinuxMounter()
    env = BackendEnv(config.state_dir, mounter, config.preallocate)
    backends: dict[str, Backend] = {kind: cls(env) for kind, cls in BACKENDS.items()}
    locks = OperationLocks()
    metrics = Metrics()
    node = NodeVolumes(config, catalog, backends, mounter, locks, probe_support, metrics)
    volumes = VolumeManager(config, catalog, backends, locks, node.drop_stale_records)
    snapshots = SnapshotManager(config, catalog, backends, locks)
    ephemeral = EphemeralVolumes(config, volumes, node)
    health = HealthChecker(config, catalog, backends, reserve=reserve)
    reconcile(catalog, backends, node)

    address, socket_path = parse_endpoint(config.endpoint)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="csi"),
        interceptors=[DriverInterceptor(metrics)],
    )
    rpc.add_IdentityServicer_to_server(IdentityService(config, catalog), server)
    rpc.add_ControllerServicer_to_server(
        ControllerService(config, catalog, volumes, snapshots, health), server
    )
    rpc.add_NodeServicer_to_server(NodeService(config, node, ephemeral, health), server)
    rpc.add_GroupControllerServicer_to_server(
        GroupControllerService(GroupSnapshots(catalog, backends, locks, snapshots)), server
    )
    rpc.add_SnapshotMetadataServicer_to_server(
        SnapshotMetadataService(SnapshotMetadataReader(catalog, backends)), server
    )
    if socket_path is not None:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        remove_socket(socket_path)
    if server.add_insecure_port(address) == 0 and socket_path is None:
        raise EndpointError(f"cannot listen on {config.endpoint}")
    server.start()
    if socket_path is not None:
        os.chmod(socket_path, 0o660)
    metrics_server = serve(metrics, config.metrics_address) if config.metrics_address else None
    release_free_memory()
    log.info(
        "serving %s on %s for node %s (state in %s)",
        config.driver_name,
        config.endpoint,
        config.node_id,
        config.state_dir,
    )
    return Driver(config, catalog, server, address, socket_path, metrics, metrics_server, lock_fd)


def release_free_memory() -> None:
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim), once start-up's
    temporary allocations (preflight, reconciliation, gRPC set-up) are freed: about 1 MiB of
    the idle driver's RSS. Nothing happens on a libc without malloc_trim.

    Before that, start-up's cyclic garbage is collected (its memory is then free to return), and
    what survives is frozen (gc.freeze): the long-lived objects of start-up (modules, classes,
    the services; about 32 000 objects) are left out of every later collection, so a full
    collection under load, which holds the GIL and so stalls every call, walks only what requests
    allocate (measured: 11-21 ms before, under 0.1 ms after)."""
    gc.collect()
    gc.freeze()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
