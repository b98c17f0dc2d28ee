"""The workloads, driven over gRPC by the same Python client for every driver."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc

from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux._proto import csi_pb2_grpc as rpc

from .drivers import RssSampler, ServedDriver

MIB = 1024**2
T = TypeVar("T")
RWO = pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER


@dataclass(frozen=True)
class Variant:
    """A kind of volume on one driver: how it is created and how its capability reads."""

    driver: str
    label: str
    parameters: dict[str, str]
    fs_type: str = ""
    block: bool = False
    size: int = 64 * MIB

    def capability(self) -> pb.VolumeCapability:
        mode = pb.VolumeCapability.AccessMode(mode=RWO)
        if self.block:
            return pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(), access_mode=mode)
        mount = pb.VolumeCapability.MountVolume(fs_type=self.fs_type)
        return pb.VolumeCapability(mount=mount, access_mode=mode)

    def create_request(self, name: str) -> pb.CreateVolumeRequest:
        return pb.CreateVolumeRequest(
            name=name,
            capacity_range=pb.CapacityRange(required_bytes=self.size),
            volume_capabilities=[self.capability()],
            parameters=self.parameters,
        )


@dataclass
class Stats:
    """Latencies (seconds) of one workload at one concurrency."""

    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # operations per second of wall time
    wall_s: float
    rss_peak_mib: float = 0.0
    errors: int = 0
    first_error: str = ""
    per_rpc_p50_ms: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def of(
        samples: list[float], wall: float, per_rpc: dict[str, list[float]] | None = None
    ) -> Stats:
        ordered = sorted(samples)
        return Stats(
            n=len(ordered),
            p50_ms=percentile(ordered, 50) * 1000,
            p99_ms=percentile(ordered, 99) * 1000,
            mean_ms=statistics.fmean(ordered) * 1000 if ordered else 0.0,
            throughput=len(ordered) / wall if wall > 0 else 0.0,
            wall_s=wall,
            per_rpc_p50_ms={
                k: percentile(sorted(v), 50) * 1000 for k, v in (per_rpc or {}).items()
            },
        )

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return 0.0
    rank = max(1, round(pct / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


class Recorder:
    """Collects per-RPC latencies from many threads."""

    def __init__(self) -> None:
        self.per_rpc: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def call(self, name: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
        with self._lock:
            self.per_rpc.setdefault(name, []).append(elapsed)
        return result


@dataclass
class Run:
    """Raw samples of one workload at one concurrency; runs of several rounds merge."""

    latencies: list[float]
    wall: float
    rss_peak_mib: float
    errors: list[str]
    per_rpc: dict[str, list[float]] = field(default_factory=dict)
    rss_peak_own_mib: float = 0.0

    def merge(self, other: Run) -> Run:
        return Run(
            self.latencies + other.latencies,
            self.wall + other.wall,
            max(self.rss_peak_mib, other.rss_peak_mib),
            self.errors + other.errors,
            {
                k: self.per_rpc.get(k, []) + other.per_rpc.get(k, [])
                for k in {*self.per_rpc, *other.per_rpc}
            },
            max(self.rss_peak_own_mib, other.rss_peak_own_mib),
        )

    def stats(self) -> Stats:
        stats = Stats.of(self.latencies, self.wall, self.per_rpc)
        stats.rss_peak_mib = self.rss_peak_mib
        stats.errors = len(self.errors)
        stats.first_error = self.errors[0] if self.errors else ""
        return stats


def _run_workers(
    driver: ServedDriver, concurrency: int, ops: int, op: Callable[[int, int], None]
) -> Run:
    """Run `ops` operations spread over `concurrency` workers; op(worker, i) does one.

    A failed operation is counted (and its time left out), not fatal: the report shows it."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    per_worker = max(1, ops // concurrency)

    def worker(w: int) -> None:
        for i in range(per_worker):
            start = time.perf_counter()
            try:
                op(w, i)
            except grpc.RpcError as exc:
                with lock:
                    errors.append(f"{exc.code().name}: {exc.details()}")
                continue
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)

    with RssSampler(driver.pid) as sampler:
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            for future in [pool.submit(worker, w) for w in range(concurrency)]:
                future.result()
        wall = time.perf_counter() - start
    return Run(latencies, wall, sampler.peak, errors, rss_peak_own_mib=sampler.peak_own)


def create_cycle(
    driver: ServedDriver, variant: Variant, concurrency: int, ops: int, warmup: int = 3
) -> Run:
    """CreateVolume + DeleteVolume of a fresh volume, `ops` times."""
    rec = Recorder()
    run_id = uuid.uuid4().hex[:8]
    with driver.channel() as channel:
        ctl = rpc.ControllerStub(channel)

        def op(w: int, i: int) -> None:
            name = f"bench-{run_id}-{w}-{i}"
            vol = rec.call("CreateVolume", lambda: ctl.CreateVolume(variant.create_request(name)))
            req = pb.DeleteVolumeRequest(volume_id=vol.volume.volume_id)
            rec.call("DeleteVolume", lambda: ctl.DeleteVolume(req))

        for i in range(warmup):
            op(999, i)
        rec.per_rpc.clear()
        run = _run_workers(driver, concurrency, ops, op)
    run.per_rpc = rec.per_rpc
    return run


def empty_rpc(driver: ServedDriver, concurrency: int, ops: int) -> Run:
    """Identity.GetPluginInfo: what any RPC costs in the driver's gRPC stack, doing no work."""
    with driver.channel() as channel:
        identity = rpc.IdentityStub(channel)
        request = pb.GetPluginInfoRequest()

        def op(w: int, i: int) -> None:
            identity.GetPluginInfo(request)

        for i in range(3):
            op(0, i)
        return _run_workers(driver, concurrency, ops, op)


def node_cycle(
    driver: ServedDriver,
    variant: Variant,
    concurrency: int,
    ops: int,
    workdir: Path,
    warmup: int = 2,
) -> Run:
    """NodeStage + NodePublish + NodeUnpublish + NodeUnstage; one volume per worker."""
    rec = Recorder()
    run_id = uuid.uuid4().hex[:8]
    cap = variant.capability()
    with driver.channel() as channel:
        ctl = rpc.ControllerStub(channel)
        node = rpc.NodeStub(channel)
        volumes: list[str] = []
        try:
            for w in range(concurrency):
                name = f"node-{run_id}-{w}"
                volumes.append(ctl.CreateVolume(variant.create_request(name)).volume.volume_id)
                (workdir / f"staging-{w}").mkdir(parents=True, exist_ok=True)
                (workdir / f"pods-{w}").mkdir(parents=True, exist_ok=True)

            def op(w: int, i: int) -> None:
                vol = volumes[w]
                staging = str(workdir / f"staging-{w}")
                target = str(workdir / f"pods-{w}" / "target")
                stage = pb.NodeStageVolumeRequest(
                    volume_id=vol, staging_target_path=staging, volume_capability=cap
                )
                publish = pb.NodePublishVolumeRequest(
                    volume_id=vol,
                    staging_target_path=staging,
                    target_path=target,
                    volume_capability=cap,
                )
                unpublish = pb.NodeUnpublishVolumeRequest(volume_id=vol, target_path=target)
                unstage = pb.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=staging)
                rec.call("NodeStageVolume", lambda: node.NodeStageVolume(stage))
                rec.call("NodePublishVolume", lambda: node.NodePublishVolume(publish))
                rec.call("NodeUnpublishVolume", lambda: node.NodeUnpublishVolume(unpublish))
                rec.call("NodeUnstageVolume", lambda: node.NodeUnstageVolume(unstage))

            for i in range(warmup):
                op(0, i)
            rec.per_rpc.clear()
            run = _run_workers(driver, concurrency, ops, op)
        finally:
            # Best effort: undo a cycle an error left half done, then delete the volume.
            for w, vol in enumerate(volumes):
                target = str(workdir / f"pods-{w}" / "target")
                staging = str(workdir / f"staging-{w}")
                with contextlib.suppress(grpc.RpcError):
                    node.NodeUnpublishVolume(
                        pb.NodeUnpublishVolumeRequest(volume_id=vol, target_path=target)
                    )
                with contextlib.suppress(grpc.RpcError):
                    node.NodeUnstageVolume(
                        pb.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=staging)
                    )
                with contextlib.suppress(grpc.RpcError):
                    ctl.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol))
    run.per_rpc = rec.per_rpc
    return run


@dataclass
class ScalePoint:
    existing: int
    create_p50_ms: float
    create_p99_ms: float
    list_page_p50_ms: float  # ListVolumes(max_entries=100): the first page
    list_all_p50_ms: float  # ListVolumes with no limit: every volume
    fill_s: float  # time to create the volumes since the previous point


def scale(
    driver: ServedDriver, variant: Variant, levels: list[int], probes: int
) -> list[ScalePoint]:
    """CreateVolume and ListVolumes latency with `levels` volumes already in the catalog."""
    points: list[ScalePoint] = []
    counter = itertools.count()
    with driver.channel() as channel:
        ctl = rpc.ControllerStub(channel)
        have = 0
        for level in levels:
            start = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                names = [f"fill-{next(counter)}" for _ in range(level - have)]
                for future in [
                    pool.submit(ctl.CreateVolume, variant.create_request(n)) for n in names
                ]:
                    future.result()
            fill = time.perf_counter() - start
            have = level
            creates: list[float] = []
            for i in range(probes):
                t = time.perf_counter()
                vol = ctl.CreateVolume(variant.create_request(f"probe-{level}-{i}"))
                creates.append(time.perf_counter() - t)
                ctl.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume.volume_id))
            pages: list[float] = []
            for _ in range(probes):
                t = time.perf_counter()
                ctl.ListVolumes(pb.ListVolumesRequest(max_entries=100))
                pages.append(time.perf_counter() - t)
            everything: list[float] = []
            for _ in range(max(3, probes // 10)):
                t = time.perf_counter()
                listed = _list_all(ctl)
                everything.append(time.perf_counter() - t)
            if listed != level:
                raise RuntimeError(f"{driver.name}: ListVolumes saw {listed} volumes, not {level}")
            creates.sort()
            points.append(
                ScalePoint(
                    existing=level,
                    create_p50_ms=percentile(creates, 50) * 1000,
                    create_p99_ms=percentile(creates, 99) * 1000,
                    list_page_p50_ms=percentile(sorted(pages), 50) * 1000,
                    list_all_p50_ms=percentile(sorted(everything), 50) * 1000,
                    fill_s=fill,
                )
            )
    return points


def _list_all(ctl: rpc.ControllerStub) -> int:
    """Count every volume, following next_token as a CO would (some drivers page by default)."""
    count, token = 0, ""
    while True:
        resp = ctl.ListVolumes(pb.ListVolumesRequest(starting_token=token), timeout=120)
        count += len(resp.entries)
        token = resp.next_token
        if not token:
            return count


def csi_sanity_binary() -> Path | None:
    found = shutil.which("csi-sanity")
    if found:
        return Path(found)
    gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True, check=False)
    candidate = Path(gopath.stdout.strip()) / "bin" / "csi-sanity"
    return candidate if candidate.exists() else None


@dataclass
class SanityResult:
    wall_s: float
    exit_code: int
    passed: int
    failed: int
    skipped: int


def sanity(
    driver: ServedDriver,
    binary: Path,
    workdir: Path,
    params: dict[str, str],
    access: str,
    skip: str = "",
) -> SanityResult:
    """A full csi-sanity run against the driver; wall time and the spec counts."""
    import xml.etree.ElementTree as ET  # noqa: PLC0415 - only this workload reads XML

    workdir.mkdir(parents=True, exist_ok=True)
    params_file = workdir / "params.yaml"
    params_file.write_text("".join(f"{k}: {v}\n" for k, v in params.items()), encoding="utf-8")
    junit = workdir / "junit.xml"
    argv = [
        str(binary),
        f"--csi.endpoint=unix://{driver.socket}",
        f"--csi.mountdir={workdir / 'mount'}",
        f"--csi.stagingdir={workdir / 'staging'}",
        f"--csi.testvolumeaccesstype={access}",
        f"--csi.junitfile={junit}",
        "--ginkgo.no-color",
    ]
    if params:
        argv.append(f"--csi.testvolumeparameters={params_file}")
    if skip:
        argv.append(f"--ginkgo.skip={skip}")
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.perf_counter() - start
    passed = failed = skipped = 0
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314 - our own run's output
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            elif case.find("skipped") is not None or case.get("status") == "skipped":
                skipped += 1
            else:
                passed += 1
    return SanityResult(wall, proc.returncode, passed, failed, skipped)
