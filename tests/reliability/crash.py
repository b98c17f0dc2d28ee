"""Crash-consistency harness: a kubelet-like workload against the real driver, which is SIGKILLed.

Several client threads drive volumes through their whole life (create, stage, publish, write a
file and remember its checksum, snapshot and restore, expand, unpublish, unstage, read back,
delete) and retry every call the way kubelet and the sidecars do: the same request again until it
succeeds. Meanwhile a supervisor kills the driver with SIGKILL at random moments and restarts it.
When every client has finished its steps the driver is killed and restarted once more, and the
harness checks what a crash must never cause: lost or corrupted volumes, storage the catalog does
not know, orphan loop devices, orphan mounts, calls that never succeeded.

Run it as root: ``scripts/crash-harness --kills 120 --seed 1 --workers 4``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import grpc

from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux._proto import csi_pb2_grpc as rpc
from tests.support.driver import DriverProcess, cleanup_under, loop_devices_under

MIB = 1024 * 1024
DRIVER_NAME = "hostpath-selinux.csi.k8s.io"
#: Codes kubelet and the sidecars treat as "try the same call again" (connection errors arrive
#: as UNAVAILABLE).
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)
#: Reconnect fast after a restart (grpc's default backoff grows to two minutes).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 300),
]
#: What a volume of each flavour is: (kind parameter, fs_type, block access, size).
FLAVOURS: dict[str, tuple[str, str, bool, int]] = {
    "ext4": ("image", "ext4", False, 64 * MIB),
    "xfs": ("image", "xfs", False, 304 * MIB),
    "block": ("image", "", True, 64 * MIB),
    "directory": ("directory", "", False, 64 * MIB),
}
PAYLOAD_BYTES = 256 * 1024
BLOCK_OFFSET = 4 * MIB
FITHAW = 0xC0045878
#: Entries a driver may keep at the top of its state directory.
STATE_TOP_LEVEL = frozenset(
    {
        "catalog.sqlite",
        "catalog.sqlite-wal",
        "catalog.sqlite-shm",
        "catalog.sqlite-journal",
        "volumes",
        "snapshots",
        "work",
        "ephemeral",
        "catalog.id",
        "intents",
        "driver.lock",
        "reserve",
    }
)


@dataclass
class HarnessConfig:
    root: Path
    kills: int = 15
    seed: int = 1
    workers: int = 3
    #: Seconds between a restart and the next kill: drawn uniformly from this range.
    min_interval: float = 0.2
    max_interval: float = 1.5
    #: A call retried for longer than this counts as never having succeeded.
    rpc_budget: float = 180.0
    call_timeout: float = 60.0
    io_timeout: float = 30.0
    #: Volumes a worker keeps alive (to be verified at the end) at most.
    keep_per_worker: int = 6


@dataclass
class Counts:
    kills: int = 0
    calls: int = 0
    rpcs: int = 0
    retries: int = 0
    volumes: int = 0
    deleted: int = 0
    snapshots: int = 0
    restores: int = 0
    expansions: int = 0
    checksums_written: int = 0
    checksums_verified: int = 0
    # what must stay zero
    lost_volumes: int = 0
    corrupted: int = 0
    leaked_volumes: int = 0
    unaccounted_files: int = 0
    orphan_loops: int = 0
    orphan_mounts: int = 0
    double_mounts: int = 0
    expansion_not_applied: int = 0
    unexpected_errors: int = 0
    never_succeeded: int = 0
    io_hangs: int = 0

    BAD = (
        "lost_volumes",
        "corrupted",
        "leaked_volumes",
        "unaccounted_files",
        "orphan_loops",
        "orphan_mounts",
        "double_mounts",
        "expansion_not_applied",
        "unexpected_errors",
        "never_succeeded",
        "io_hangs",
    )


@dataclass
class Report:
    counts: Counts
    findings: list[str]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings and all(getattr(self.counts, n) == 0 for n in Counts.BAD)

    def render(self) -> str:
        lines = [f"crash harness: {'PASS' if self.ok else 'FAIL'} in {self.seconds:.0f}s"]
        lines += [f"  {f.name:22} {getattr(self.counts, f.name)}" for f in fields(self.counts)]
        if self.findings:
            lines.append(f"findings ({len(self.findings)}), grouped:")
            for text, n in group_findings(self.findings):
                lines.append(f"  {n:4}x {text}")
        return "\n".join(lines)


_IDS = re.compile(r"(vol|snap)-[0-9a-f]{32}")
_NAMES = re.compile(r"pvc-w\d+-c\d+-")
_LOOPS = re.compile(r"/dev/loop\d+|/proc/self/fd/\d+")


def group_findings(findings: list[str]) -> list[tuple[str, int]]:
    """Findings with ids, volume names and loop numbers blanked, most frequent first."""
    counter: Counter[str] = Counter()
    first: dict[str, str] = {}
    for text in findings:
        key = _LOOPS.sub("N", _NAMES.sub("pvc-*-", _IDS.sub(r"\1-*", text)))
        counter[key] += 1
        first.setdefault(key, text)
    return [(first[k], n) for k, n in counter.most_common()]


@dataclass
class Vol:
    """One volume as the workload (the ledger) knows it."""

    name: str
    flavour: str
    size: int
    volume_id: str = ""
    checksum: str = ""
    staging: str = ""
    target: str = ""
    staged: bool = False
    published: bool = False
    deleted: bool = False

    @property
    def kind(self) -> str:
        return FLAVOURS[self.flavour][0]

    @property
    def block(self) -> bool:
        return FLAVOURS[self.flavour][2]

    def capability(self) -> pb.VolumeCapability:
        mode = pb.VolumeCapability.AccessMode(
            mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
        )
        if self.block:
            return pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(), access_mode=mode)
        return pb.VolumeCapability(
            mount=pb.VolumeCapability.MountVolume(fs_type=FLAVOURS[self.flavour][1]),
            access_mode=mode,
        )


class GaveUp(Exception):
    """A call did not succeed within its budget (already recorded as a finding)."""


@dataclass(frozen=True)
class MountRow:
    mount_id: int
    parent_id: int
    point: str


def mount_entries_under(root: str) -> list[MountRow]:
    """Every mount at or below root, from /proc/self/mountinfo, each listed once.

    mountinfo is read in several read() calls; a table that changes in between can list one
    mount twice, so rows are keyed by mount id.
    """
    found: dict[int, MountRow] = {}
    prefix = root.rstrip("/") + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            if point == root or point.startswith(prefix):
                found[int(fields[0])] = MountRow(int(fields[0]), int(fields[1]), point)
    return [found[k] for k in sorted(found)]


def mount_points_under(root: str) -> list[str]:
    """Mount points at or below root (a point with stacked mounts appears once per mount)."""
    return [row.point for row in mount_entries_under(root)]


def stack_depth(rows: list[MountRow], point: str) -> int:
    """How many mounts are stacked at point: a mount on top of another has the one below as
    its parent. (Two rows at one point whose parents are elsewhere are one mount replaced by
    another while mountinfo was being read, not a stack.)"""
    here = {r.mount_id for r in rows if r.point == point}
    if not here:
        return 0
    return 1 + sum(1 for r in rows if r.point == point and r.parent_id in here)


def mount_count(point: str) -> int:
    """How many mounts are stacked exactly at point."""
    real = os.path.realpath(point)
    return stack_depth(mount_entries_under(real), real)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Harness:
    def __init__(self, config: HarnessConfig) -> None:
        self.cfg = config
        self.counts = Counts()
        self.findings: list[str] = []
        self._mutex = threading.Lock()
        self.kills_done = threading.Event()
        self.abort = threading.Event()
        self.kubelet = config.root / "kubelet"
        self.driver = DriverProcess(
            config.root / "driver",
            node_id="crash-node",
            extra_args=("--kubelet-dir", str(self.kubelet), "--grace-period", "1", "-v", "2"),
        )
        self.ledger: list[Vol] = []
        #: Loop devices and mount points already reported (each counts once).
        self.reported: set[str] = set()

    # bookkeeping

    def count(self, name: str, n: int = 1) -> None:
        with self._mutex:
            setattr(self.counts, name, getattr(self.counts, name) + n)

    def finding(self, text: str, counter: str | None = None) -> None:
        with self._mutex:
            self.findings.append(text)
            if counter:
                setattr(self.counts, counter, getattr(self.counts, counter) + 1)

    @property
    def state_dir(self) -> Path:
        return self.driver.state_dir

    # the run

    def run(self) -> Report:
        started = time.monotonic()
        self.kubelet.mkdir(parents=True, exist_ok=True)
        try:
            self.driver.start()
            supervisor = threading.Thread(target=self.supervise, name="supervisor")
            workers = [
                threading.Thread(target=self.work, args=(i,), name=f"worker-{i}")
                for i in range(self.cfg.workers)
            ]
            supervisor.start()
            for w in workers:
                w.start()
            supervisor.join()
            for w in workers:
                w.join()
            if not self.abort.is_set():
                # One more crash once every client is done: the final state is the state after
                # a crash and a reconciliation, not after a clean shutdown.
                self.driver.stop(signal.SIGKILL)
                self.count("kills")
                self.driver.start()
                self.final_checks()
        except Exception as exc:
            self.finding(f"harness error: {type(exc).__name__}: {exc}")
        finally:
            self.driver.stop(signal.SIGTERM)
            for leaked in cleanup_under(self.cfg.root):
                if leaked.split(" ", 1)[1] not in self.reported:
                    self.finding(f"left behind after the driver stopped: {leaked}")
            for dev in thaw_and_detach(self.cfg.root):
                self.finding(f"{dev} held a frozen filesystem after its volume was gone; thawed")
        return Report(self.counts, self.findings, time.monotonic() - started)

    def supervise(self) -> None:
        rng = random.Random(self.cfg.seed)  # noqa: S311 - a reproducible schedule, not a secret
        try:
            while self.counts.kills < self.cfg.kills and not self.abort.is_set():
                time.sleep(rng.uniform(self.cfg.min_interval, self.cfg.max_interval))
                self.driver.stop(signal.SIGKILL)
                self.count("kills")
                try:
                    self.driver.start()
                except RuntimeError as exc:
                    self.finding(
                        f"the driver did not come back after kill {self.counts.kills}: {exc}"
                    )
                    self.abort.set()
        finally:
            self.kills_done.set()

    def work(self, index: int) -> None:
        client = Client(self, index)
        rng = random.Random(self.cfg.seed * 7919 + index)  # noqa: S311 - reproducible
        kept = 0
        cycle = 0
        try:
            while not self.kills_done.is_set() and not self.abort.is_set():
                flavour = rng.choice(sorted(FLAVOURS))
                vol = Vol(f"pvc-w{index}-c{cycle}-{flavour}", flavour, FLAVOURS[flavour][3])
                with self._mutex:
                    self.ledger.append(vol)
                keep = kept < self.cfg.keep_per_worker and rng.random() < 0.25
                try:
                    client.lifecycle(vol, rng, keep)
                except GaveUp:
                    pass  # recorded where it happened; the final checks settle the volume
                except Exception as exc:
                    self.finding(
                        f"worker {index} failed on {vol.name}: {type(exc).__name__}: {exc}",
                        "unexpected_errors",
                    )
                kept += keep
                cycle += 1
        finally:
            client.close()

    # final checks

    def final_checks(self) -> None:
        client = Client(self, 999)
        try:
            # Finish what a client gave up on, so the checks below see a quiet node.
            for vol in self.ledger:
                with contextlib.suppress(GaveUp):
                    client.settle(vol)
            self.check_disk(client)
            self.check_node()
            for vol in self.ledger:
                if vol.deleted or not vol.volume_id:
                    continue
                with contextlib.suppress(GaveUp):
                    if vol.checksum:
                        client.verify(vol)
                    client.delete(vol)
            self.check_empty(client)
        finally:
            client.close()

    def catalog(self, client: Client) -> tuple[set[str], set[str]]:
        """The volume ids and snapshot ids the driver lists."""
        volumes = listed(client, "ListVolumes", pb.ListVolumesRequest, lambda e: e.volume.volume_id)
        snaps = listed(
            client, "ListSnapshots", pb.ListSnapshotsRequest, lambda e: e.snapshot.snapshot_id
        )
        return volumes, snaps

    def check_disk(self, client: Client) -> None:
        volumes, snaps = self.catalog(client)
        alive = {v.volume_id: v for v in self.ledger if v.volume_id and not v.deleted}
        for vid, vol in alive.items():
            if vid not in volumes:
                self.finding(f"volume {vol.name} ({vid}) is gone from the catalog", "lost_volumes")
            elif not self.storage_of(vid, vol.kind).exists():
                self.finding(f"volume {vol.name} ({vid}) has no storage on disk", "lost_volumes")
        for vid in sorted(set(volumes) - set(alive)):
            self.finding(f"the catalog holds volume {vid}, which no client owns", "leaked_volumes")
        for entry in sorted(os.listdir(self.state_dir)):
            if entry not in STATE_TOP_LEVEL:
                self.finding(
                    f"unaccounted entry {entry} in the state directory", "unaccounted_files"
                )
        vdir = self.state_dir / "volumes"
        for entry in sorted(os.listdir(vdir)) if vdir.is_dir() else []:
            vid = entry.removesuffix(".img")
            if vid not in volumes:
                self.finding(f"unaccounted volume storage {vdir / entry}", "unaccounted_files")
        sdir = self.state_dir / "snapshots"
        for entry in sorted(os.listdir(sdir)) if sdir.is_dir() else []:
            sid = entry.removesuffix(".img").removesuffix(".tar")
            if sid not in snaps:
                self.finding(f"unaccounted snapshot file {sdir / entry}", "unaccounted_files")
        for sid in sorted(snaps):
            self.finding(
                f"the catalog holds snapshot {sid}, which no client owns", "leaked_volumes"
            )

    def storage_of(self, volume_id: str, kind: str) -> Path:
        suffix = ".img" if kind == "image" else ""
        return self.state_dir / "volumes" / f"{volume_id}{suffix}"

    def check_node(self) -> None:
        """Nothing is staged or published now: every loop device and mount below root is orphan."""
        staged = {str(self.storage_of(v.volume_id, v.kind)) for v in self.ledger if v.staged}
        for dev in loop_devices_under(str(self.state_dir.resolve())):
            backing = Path(f"/sys/block/{Path(dev).name}/loop/backing_file").read_text().strip()
            if backing not in staged:
                self.reported.add(dev)
                self.finding(f"orphan loop device {dev} backed by {backing}", "orphan_loops")
        expected = {v.target for v in self.ledger if v.published} | {
            v.staging for v in self.ledger if v.staged and not v.block
        }
        for point in mount_points_under(str(self.cfg.root.resolve())):
            if point not in expected:
                self.reported.add(point)
                self.finding(f"orphan mount at {point}", "orphan_mounts")

    def check_empty(self, client: Client) -> None:
        volumes, snaps = self.catalog(client)
        for sid in snaps:
            self.finding(
                f"snapshot {sid} is still listed after every one was deleted", "leaked_volumes"
            )
        for vid in volumes:
            self.finding(
                f"volume {vid} is still listed after every volume was deleted", "leaked_volumes"
            )
        for sub in ("volumes", "snapshots"):
            d = self.state_dir / sub
            for entry in sorted(os.listdir(d)) if d.is_dir() else []:
                self.finding(
                    f"{d / entry} is left after every volume was deleted", "unaccounted_files"
                )
        left = [
            (dev, "orphan_loops") for dev in loop_devices_under(str(self.state_dir.resolve()))
        ] + [(p, "orphan_mounts") for p in mount_points_under(str(self.cfg.root.resolve()))]
        for what, counter in left:
            if what not in self.reported:
                self.reported.add(what)
                self.finding(f"{what} is left after every volume was deleted", counter)


def listed(
    client: Client, method: str, request: Callable[..., Any], entry_id: Callable[[Any], str]
) -> set[str]:
    """The id of every entry a List* call returns, following next_token to the last page."""
    found: set[str] = set()
    token = ""
    while True:
        resp = client.call(method, request(starting_token=token))
        found.update(entry_id(e) for e in resp.entries)
        token = resp.next_token
        if not token:
            return found


class Client:
    """One kubelet-like client: its own channel, and the retry loop kubelet has."""

    def __init__(self, harness: Harness, index: int) -> None:
        self.h = harness
        self.index = index
        self.rng = random.Random(harness.cfg.seed * 104729 + index)  # noqa: S311 - reproducible
        self.channel = grpc.insecure_channel(
            f"unix:{harness.driver.socket}", options=CHANNEL_OPTIONS
        )
        self.identity = rpc.IdentityStub(self.channel)
        self.controller = rpc.ControllerStub(self.channel)
        self.node = rpc.NodeStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def call(self, method: str, request: Any) -> Any:
        """Send request until it succeeds; retryable codes are retried silently, others are
        findings (kubelet retries them too, a few times here)."""
        stub = self.node if method.startswith("Node") else self.controller
        func: Callable[..., Any] = getattr(stub, method)
        self.h.count("calls")
        started = time.monotonic()
        unexpected = 0
        while True:
            self.h.count("rpcs")
            try:
                return func(request, timeout=self.h.cfg.call_timeout)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
            if time.monotonic() - started > self.h.cfg.rpc_budget or self.h.abort.is_set():
                self.h.finding(
                    f"{method} never succeeded (last answer {code.name}: {details})",
                    "never_succeeded",
                )
                raise GaveUp(method)
            self.h.count("retries")
            if code in RETRYABLE:
                time.sleep(0.05 + self.rng.random() * 0.2)
                continue
            unexpected += 1
            self.h.finding(f"{method} answered {code.name}: {details}", "unexpected_errors")
            if unexpected >= 3:
                self.h.finding(f"{method} never succeeded after 3 errors", "never_succeeded")
                raise GaveUp(method)
            time.sleep(0.5 * unexpected)

    # paths kubelet would use

    def paths_for(self, vol: Vol, pod: str) -> tuple[str, str]:
        base = self.h.kubelet / "plugins" / "kubernetes.io" / "csi"
        if vol.block:
            staging = base / "volumeDevices" / "staging" / vol.name
            target = base / "volumeDevices" / "publish" / vol.name / pod
            staging.mkdir(parents=True, exist_ok=True)
        else:
            staging = base / DRIVER_NAME / vol.name / "globalmount"
            target = (
                self.h.kubelet / "pods" / pod / "volumes" / "kubernetes.io~csi" / vol.name / "mount"
            )
        staging.parent.mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        return str(staging), str(target)

    # steps

    def create(self, vol: Vol, source_snapshot: str = "") -> None:
        kind = vol.kind
        request = pb.CreateVolumeRequest(
            name=vol.name,
            capacity_range=pb.CapacityRange(required_bytes=vol.size),
            volume_capabilities=[vol.capability()],
            parameters={"kind": kind},
        )
        if source_snapshot:
            request.volume_content_source.snapshot.snapshot_id = source_snapshot
        resp = self.call("CreateVolume", request)
        vol.volume_id = resp.volume.volume_id
        vol.size = resp.volume.capacity_bytes
        self.h.count("volumes")

    def stage(self, vol: Vol, pod: str) -> None:
        vol.staging, vol.target = self.paths_for(vol, pod)
        self.call(
            "NodeStageVolume",
            pb.NodeStageVolumeRequest(
                volume_id=vol.volume_id,
                staging_target_path=vol.staging,
                volume_capability=vol.capability(),
            ),
        )
        vol.staged = True

    def publish(self, vol: Vol) -> None:
        self.call(
            "NodePublishVolume",
            pb.NodePublishVolumeRequest(
                volume_id=vol.volume_id,
                staging_target_path=vol.staging,
                target_path=vol.target,
                volume_capability=vol.capability(),
            ),
        )
        vol.published = True
        n = mount_count(vol.target)
        if n != 1:
            self.h.finding(
                f"volume {vol.name} has {n} mounts at its target {vol.target} after publish",
                "double_mounts",
            )

    def unpublish(self, vol: Vol) -> None:
        self.call(
            "NodeUnpublishVolume",
            pb.NodeUnpublishVolumeRequest(volume_id=vol.volume_id, target_path=vol.target),
        )
        vol.published = False

    def unstage(self, vol: Vol) -> None:
        self.call(
            "NodeUnstageVolume",
            pb.NodeUnstageVolumeRequest(volume_id=vol.volume_id, staging_target_path=vol.staging),
        )
        vol.staged = False

    def delete(self, vol: Vol) -> None:
        self.call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=vol.volume_id))
        vol.deleted = True
        self.h.count("deleted")

    def settle(self, vol: Vol) -> None:
        """Undo whatever of vol's node state is still in place (after a client gave up)."""
        if not vol.volume_id or vol.deleted:
            return
        if vol.published:
            self.unpublish(vol)
        if vol.staged:
            self.unstage(vol)

    # data

    def io(self, what: str, vol: Vol, func: Callable[[], bytes]) -> bytes:
        """Run func with a time limit: a filesystem left frozen by a crash blocks I/O forever."""
        result: list[bytes] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                result.append(func())
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(self.h.cfg.io_timeout)
        if thread.is_alive():
            self.h.finding(
                f"{what} on volume {vol.name} hung for {self.h.cfg.io_timeout}s "
                f"(filesystem left frozen?); thawing {vol.staging}",
                "io_hangs",
            )
            with contextlib.suppress(OSError):
                fd = os.open(vol.staging, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    fcntl.ioctl(fd, FITHAW, 0)
                finally:
                    os.close(fd)
            thread.join(self.h.cfg.io_timeout)
            if thread.is_alive():
                raise GaveUp(what)
        if errors:
            raise errors[0]
        return result[0]

    def write(self, vol: Vol) -> None:
        data = self.rng.randbytes(PAYLOAD_BYTES)

        def do() -> bytes:
            if vol.block:
                fd = os.open(vol.target, os.O_RDWR | os.O_CLOEXEC)
                try:
                    os.pwrite(fd, data, BLOCK_OFFSET)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            else:
                path = os.path.join(vol.target, "payload.bin")
                with open(path, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            return data

        self.io("write", vol, do)
        vol.checksum = sha256(data)
        self.h.count("checksums_written")

    def read(self, vol: Vol) -> bytes:
        def do() -> bytes:
            if vol.block:
                fd = os.open(vol.target, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    return os.pread(fd, PAYLOAD_BYTES, BLOCK_OFFSET)
                finally:
                    os.close(fd)
            return Path(vol.target, "payload.bin").read_bytes()

        return self.io("read", vol, do)

    def check_checksum(self, vol: Vol, want: str, what: str) -> None:
        try:
            got = sha256(self.read(vol))
        except OSError as exc:
            self.h.finding(f"{what}: reading volume {vol.name} failed: {exc}", "corrupted")
            return
        if got != want:
            self.h.finding(
                f"{what}: volume {vol.name} reads checksum {got}, wrote {want}", "corrupted"
            )
        else:
            self.h.count("checksums_verified")

    def verify(self, vol: Vol, want: str = "", pod: str = "") -> None:
        """Stage and publish vol again, compare its payload's checksum, and take it down."""
        self.stage(vol, pod or f"verify-{vol.name}")
        self.publish(vol)
        try:
            self.check_checksum(vol, want or vol.checksum, "read-back")
        finally:
            self.unpublish(vol)
            self.unstage(vol)

    # the workload

    def lifecycle(self, vol: Vol, rng: random.Random, keep: bool) -> None:
        self.create(vol)
        self.stage(vol, f"pod-{vol.name}")
        self.publish(vol)
        self.write(vol)
        if rng.random() < 0.4:
            self.snapshot_and_restore(vol)
        if rng.random() < 0.4 and expandable(vol):
            self.expand(vol)
        self.unpublish(vol)
        self.unstage(vol)
        if rng.random() < 0.5:
            self.verify(vol, pod=f"again-{vol.name}")
        if not keep:
            self.delete(vol)

    def snapshot_and_restore(self, vol: Vol) -> None:
        snap = self.call(
            "CreateSnapshot",
            pb.CreateSnapshotRequest(name=f"snap-{vol.name}", source_volume_id=vol.volume_id),
        ).snapshot
        self.h.count("snapshots")
        restored = Vol(f"{vol.name}-restore", vol.flavour, max(vol.size, snap.size_bytes))
        with self.h._mutex:
            self.h.ledger.append(restored)
        try:
            self.create(restored, source_snapshot=snap.snapshot_id)
            self.verify(restored, want=vol.checksum, pod=f"restore-{vol.name}")
            self.delete(restored)
            self.h.count("restores")
        finally:
            self.call("DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))

    def measured_size(self, vol: Vol) -> int:
        if vol.block:
            fd = os.open(vol.target, os.O_RDONLY | os.O_CLOEXEC)
            try:
                return os.lseek(fd, 0, os.SEEK_END)
            finally:
                os.close(fd)
        st = os.statvfs(vol.target)
        return st.f_blocks * st.f_frsize

    def expand(self, vol: Vol) -> None:
        before = self.measured_size(vol)
        new = vol.size + 32 * MIB
        resp = self.call(
            "ControllerExpandVolume",
            pb.ControllerExpandVolumeRequest(
                volume_id=vol.volume_id,
                capacity_range=pb.CapacityRange(required_bytes=new),
                volume_capability=vol.capability(),
            ),
        )
        if resp.node_expansion_required:
            self.call(
                "NodeExpandVolume",
                pb.NodeExpandVolumeRequest(
                    volume_id=vol.volume_id,
                    volume_path=vol.target,
                    staging_target_path=vol.staging,
                    capacity_range=pb.CapacityRange(required_bytes=new),
                    volume_capability=vol.capability(),
                ),
            )
        vol.size = max(vol.size, resp.capacity_bytes)
        after = self.measured_size(vol)
        if after <= before:
            self.h.finding(
                f"volume {vol.name} was expanded to {resp.capacity_bytes} bytes "
                f"(node_expansion_required={resp.node_expansion_required}) but its "
                f"{'device' if vol.block else 'filesystem'} still has {after} bytes",
                "expansion_not_applied",
            )
        self.h.count("expansions")


CAP_SYS_RESOURCE = 24
MS_RDONLY = 1


def thaw_and_detach(root: Path) -> list[str]:
    """Detach loop devices below root that a frozen, unmounted superblock still holds.

    A filesystem unmounted while frozen stays frozen in the kernel and keeps its loop device
    busy; the only handle left is to mount the device again (which finds the same superblock),
    thaw it, and unmount it. Returns the devices it had to thaw.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    thawed = []
    for dev in loop_devices_under(str(root.resolve())):
        point = tempfile.mkdtemp(prefix="csi-thaw-")
        try:
            # Read-write, as the frozen superblock is (the kernel refuses to change its RO state).
            mounted = any(
                libc.mount(dev.encode(), point.encode(), fs_type, flags, None) == 0
                for fs_type in (b"ext4", b"xfs")
                for flags in (0, MS_RDONLY)
            )
            if not mounted:
                continue
            try:
                fd = os.open(point, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    fcntl.ioctl(fd, FITHAW, 0)
                    thawed.append(dev)
                except OSError:
                    pass  # not frozen
                finally:
                    os.close(fd)
            finally:
                libc.umount2(point.encode(), 0)
        finally:
            os.rmdir(point)
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
    return thawed


def has_sys_resource() -> bool:
    """True when this process (and so the driver it starts) holds CAP_SYS_RESOURCE."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def expandable(vol: Vol) -> bool:
    """Directories have no size; ext4 grows online only with CAP_SYS_RESOURCE (sandboxes lack it)."""
    if vol.kind == "directory":
        return False
    return vol.flavour != "ext4" or has_sys_resource()


@contextlib.contextmanager
def harness_root(root: Path | None, keep: bool) -> Iterator[Path]:
    path = root or Path(tempfile.mkdtemp(prefix="csi-crash-"))
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        leftovers = cleanup_under(path) + thaw_and_detach(path)
        if leftovers:
            print(f"cleaned up after the harness: {leftovers}", file=sys.stderr)
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run(config: HarnessConfig) -> Report:
    return Harness(config).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crash-harness",
        description="SIGKILL the driver at random moments under a kubelet-like workload and "
        "check that nothing is lost, leaked or left mounted. Needs root.",
    )
    parser.add_argument("--kills", type=int, default=120, help="SIGKILLs during the workload")
    parser.add_argument("--seed", type=int, default=1, help="seed for every random choice")
    parser.add_argument("--workers", type=int, default=4, help="concurrent client threads")
    parser.add_argument(
        "--min-interval", type=float, default=0.2, help="seconds, least between kills"
    )
    parser.add_argument(
        "--max-interval", type=float, default=1.5, help="seconds, most between kills"
    )
    parser.add_argument("--root", type=Path, help="work directory (default: a new one in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (driver log)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("the harness needs root (loop devices and mounts)")
    with harness_root(args.root, args.keep) as root:
        report = run(
            HarnessConfig(
                root=root,
                kills=args.kills,
                seed=args.seed,
                workers=args.workers,
                min_interval=args.min_interval,
                max_interval=args.max_interval,
            )
        )
        print(report.render())
        if args.keep:
            print(f"work directory kept: {root}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
