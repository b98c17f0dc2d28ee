"""Benchmark this driver against the Go reference hostpath driver, in one run, on this machine.

    python -m benchmarks.run --go-binary PATH [--quick] [--out docs/benchmarks] [--doc docs/benchmarks.md]

Needs root (real mounts and loop devices), csi-sanity, `pip install -r benchmarks/requirements.txt`
(matplotlib, py-spy) and the reference driver's `hostpathplugin`, built elsewhere and named by
--go-binary or the CSI_BENCH_GO_BINARY environment variable; its version is read from the binary.
Writes results.json and PNG plots into --out and the generated tables into --doc, between the
`<!-- results:begin -->` and `<!-- results:end -->` markers (the prose around them is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from csi_hostpath_selinux.backends.image import has_sys_resource
from tests.support.driver import cleanup_under

from . import report
from .drivers import (
    GO_BINARY_ENV,
    ServedDriver,
    ours,
    reference,
    reference_version,
    rss_mib,
    serving,
)
from .floor import FLOOR, floor_server, stack_floor
from .profile import PySpy, summarise
from .workloads import (
    MIB,
    Run,
    Stats,
    Variant,
    create_cycle,
    csi_sanity_binary,
    empty_rpc,
    node_cycle,
    sanity,
    scale,
)

EXT4_RESIZE_SPEC = "NodeExpandVolume should work if node-expand is called after node-publish"
PEAK_OWN = "peak under load"
PEAK_ALL = "peak under load, with children"
HERE = Path(__file__).resolve().parent
CONCURRENCY = (1, 8)

#: Like-for-like: our directory kind against the reference driver's (directory) default.
OURS_DIR = Variant("ours", "ours: directory", {"kind": "directory"}, size=MIB)
OURS_EXT4 = Variant("ours", "ours: ext4 image", {"kind": "image"}, fs_type="ext4")
OURS_BLOCK = Variant("ours", "ours: block (loop)", {"kind": "image"}, block=True)
EXT4_PARAMS = {"kind": "image", "csi.storage.k8s.io/fstype": "ext4"}
OURS_SCALE_ARGS = ("--max-volumes-per-node", "100000")
GO_DIR = Variant("go", "go: directory", {}, size=MIB)
GO_BLOCK = Variant("go", "go: block (loop)", {}, block=True)


@dataclass
class Plan:
    create_ops: int
    node_ops: int
    scale_levels: list[int]
    scale_probes: int
    sanity: bool
    rounds: int


FULL = Plan(
    create_ops=400,
    node_ops=240,
    scale_levels=[10, 1000, 10000],
    scale_probes=50,
    sanity=True,
    rounds=4,
)
QUICK = Plan(
    create_ops=16, node_ops=8, scale_levels=[10, 100, 300], scale_probes=8, sanity=True, rounds=1
)


@dataclass
class Results:
    started: str
    quick: bool
    machine: dict[str, str]
    go_binary: str
    reference_version: str
    driver_source: str = "work tree"
    #: workload -> variant label -> str(concurrency) -> Stats as JSON
    latency: dict[str, dict[str, dict[str, dict[str, object]]]] = field(default_factory=dict)
    rss: dict[str, dict[str, float]] = field(default_factory=dict)
    scale: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    sanity: dict[str, dict[str, float]] = field(default_factory=dict)
    profiles: dict[str, dict[str, object]] = field(default_factory=dict)
    durations_s: dict[str, float] = field(default_factory=dict)
    #: idle VmRSS (MiB) of the bare stack: see benchmarks/floor.py
    floor: dict[str, float] = field(default_factory=dict)
    leaked: list[str] = field(default_factory=list)

    def put(self, workload: str, variant: str, concurrency: int, stats: Stats) -> None:
        self.latency.setdefault(workload, {}).setdefault(variant, {})[str(concurrency)] = (
            stats.to_json()
        )

    def record_rss(
        self, name: str, idle: float, peak_own: float, peak: float, after: float
    ) -> None:
        """Idle from the first round, the peaks of all rounds, idle after load from the last."""
        rss = self.rss.setdefault(name, {})
        rss.setdefault("idle", idle)
        rss[PEAK_OWN] = max(rss.get(PEAK_OWN, 0.0), peak_own)
        rss[PEAK_ALL] = max(rss.get(PEAK_ALL, 0.0), peak)
        rss["idle after load"] = after


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False)
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "go": go.stdout.strip(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


@contextlib.contextmanager
def phase(results: Results, name: str) -> Iterator[None]:
    log(f"{name} ...")
    start = time.perf_counter()
    try:
        yield
    finally:
        results.durations_s[name] = time.perf_counter() - start
        log(f"{name}: {results.durations_s[name]:.1f}s")


def idle_rss(driver: ServedDriver, settle: float = 2.0) -> float:
    time.sleep(settle)
    return rss_mib(driver.pid)


@dataclass
class Bench:
    """One benchmark run: what it measures, with which binaries, into which results."""

    results: Results
    plan: Plan
    work: Path
    out: Path
    go_binary: Path
    driver_src: Path | None = None
    runs: dict[tuple[str, str, int], Run] = field(default_factory=dict)

    def ours(self, name: str, extra: Sequence[str] = ()) -> ServedDriver:
        return ours(self.work / name, name, extra, self.driver_src)

    def go(self, name: str) -> ServedDriver:
        return reference(self.go_binary, self.work / f"go-{name}", f"go-{name}")

    def add(self, workload: str, variant: str, conc: int, run: Run) -> None:
        key = (workload, variant, conc)
        self.runs[key] = self.runs[key].merge(run) if key in self.runs else run

    def cycles_on(self, driver: ServedDriver, variants: list[Variant], round_: int) -> None:
        """One round of create and node cycles of each variant at each concurrency."""
        create_ops = max(1, self.plan.create_ops // self.plan.rounds)
        node_ops = max(1, self.plan.node_ops // self.plan.rounds)
        with serving(driver):
            idle = idle_rss(driver)
            peak = peak_own = 0.0
            for conc in CONCURRENCY:
                run = empty_rpc(driver, conc, create_ops * 4)
                self.add("empty RPC", f"{driver.name}: GetPluginInfo", conc, run)
            for variant in variants:
                for conc in CONCURRENCY:
                    run = create_cycle(driver, variant, conc, create_ops)
                    self.add("create", variant.label, conc, run)
                    peak = max(peak, run.rss_peak_mib)
                    peak_own = max(peak_own, run.rss_peak_own_mib)
            for variant in variants:
                workload = "node-block" if variant.block else "node-fs"
                for conc in CONCURRENCY:
                    workdir = self.work / f"{driver.name.replace(' ', '-')}-{round_}-node-{conc}"
                    run = node_cycle(driver, variant, conc, node_ops, workdir)
                    self.add(workload, variant.label, conc, run)
                    peak = max(peak, run.rss_peak_mib)
                    peak_own = max(peak_own, run.rss_peak_own_mib)
            self.results.record_rss(driver.name, idle, peak_own, peak, idle_rss(driver))
        self.results.leaked += driver.leaked

    def cycles(self) -> None:
        """The create and node cycles, in rounds that alternate the drivers and which of them
        goes first, so that load from elsewhere on the machine falls on both alike."""
        with phase(self.results, "create and node cycles"):
            for round_ in range(self.plan.rounds):
                log(f"  round {round_ + 1} of {self.plan.rounds}")
                mine = (self.ours(f"ours-{round_}"), [OURS_DIR, OURS_EXT4, OURS_BLOCK])
                theirs = (self.go(f"cycles-{round_}"), [GO_DIR, GO_BLOCK])
                for driver, variants in (mine, theirs) if round_ % 2 == 0 else (theirs, mine):
                    self.cycles_on(driver, variants, round_)
                self.floor_rpc(round_)
        for (workload, variant, conc), run in self.runs.items():
            stats = run.stats()
            self.results.put(workload, variant, conc, stats)
            log(
                f"  {workload} {variant} c={conc}: p50 {stats.p50_ms:.2f} ms, "
                f"p99 {stats.p99_ms:.2f} ms, {stats.errors} errors"
            )

    def floor_rpc(self, round_: int) -> None:
        """GetPluginInfo on a bare grpcio server (benchmarks/floor.py), in the same rounds: what
        grpcio's Python server costs before any driver code runs."""
        driver = floor_server(self.work / f"floor-{round_}", self.driver_src)
        with serving(driver):
            for conc in CONCURRENCY:
                run = empty_rpc(driver, conc, max(1, self.plan.create_ops // self.plan.rounds) * 4)
                self.add("empty RPC", f"{FLOOR}: GetPluginInfo", conc, run)
        self.results.leaked += driver.leaked

    def profiles(self) -> None:
        """py-spy samples of our driver in the node cycles and the directory create cycle."""
        driver = self.ours("ours-profile")
        ops = self.plan.node_ops * 2
        runs: list[tuple[str, Callable[[], object]]] = [
            ("node-fs ext4 image", lambda: node_cycle(driver, OURS_EXT4, 1, ops, self.work / "p1")),
            ("node-fs directory", lambda: node_cycle(driver, OURS_DIR, 1, ops, self.work / "p2")),
            ("node-block", lambda: node_cycle(driver, OURS_BLOCK, 1, ops, self.work / "p3")),
            ("create directory", lambda: create_cycle(driver, OURS_DIR, 1, ops * 2)),
        ]
        with phase(self.results, "profiles"), serving(driver):
            for name, run in runs:
                raw = self.out / f"profile-{name.replace(' ', '-')}.txt"
                spy = PySpy(driver.pid, raw)
                time.sleep(0.5)
                try:
                    run()
                finally:
                    spy.stop()
                if raw.exists():
                    self.results.profiles[name] = asdict(summarise(raw))
                    raw.unlink()
        self.results.leaked += driver.leaked

    def scale(self) -> None:
        drivers = [(self.ours("ours-scale", OURS_SCALE_ARGS), OURS_DIR)]
        drivers.append((self.go("scale"), GO_DIR))
        with phase(self.results, "scale"):
            for driver, variant in drivers:
                with serving(driver):
                    points = scale(driver, variant, self.plan.scale_levels, self.plan.scale_probes)
                self.results.scale[variant.label] = [asdict(p) for p in points]
                self.results.leaked += driver.leaked
                log(f"  scale {variant.label}: {[round(p.create_p50_ms, 2) for p in points]}")

    def sanity(self, binary: Path) -> None:
        """A full csi-sanity run per driver, twice, alternating; the faster of the two counts
        (a burst of load elsewhere then spoils one run, not one driver's figure)."""
        # As sanity/test_sanity.py: ext4's online resize needs CAP_SYS_RESOURCE.
        ext4_skip = "" if has_sys_resource() else EXT4_RESIZE_SPEC
        kinds: list[tuple[Callable[[str], ServedDriver], str, dict[str, str], str]] = [
            (self.ours, "ours: directory", {"kind": "directory"}, ""),
            (self.ours, "ours: ext4 image", EXT4_PARAMS, ext4_skip),
            (self.go, "go: directory", {}, ""),
        ]
        with phase(self.results, "csi-sanity"):
            for repeat in range(2):
                for i, (start, label, params, skip) in enumerate(
                    kinds if repeat == 0 else kinds[::-1]
                ):
                    driver = start(f"sanity-{repeat}-{i}")
                    with serving(driver):
                        result = sanity(
                            driver, binary, driver.root / "sanity", params, "mount", skip
                        )
                    self.results.leaked += driver.leaked
                    log(f"  csi-sanity {label}: {result.wall_s:.1f}s exit {result.exit_code}")
                    best = self.results.sanity.get(label)
                    if best is None or result.wall_s < float(best["wall_s"]):
                        self.results.sanity[label] = asdict(result)

    def memory_floor(self) -> None:
        """Idle RSS of the bare stack our driver is built on (benchmarks/floor.py)."""
        with phase(self.results, "memory floor"):
            self.results.floor = stack_floor(self.work / "floor", self.driver_src)
            log(f"  floor: {self.results.floor}")


def export_commit(commit: str, into: Path) -> Path:
    """Our package as of `commit` (git archive, read-only), with the generated stubs beside it."""
    repo = HERE.parent
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", commit, "csi_hostpath_selinux"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    # The stubs are generated at build time, never committed: take this tree's.
    shutil.copytree(
        repo / "csi_hostpath_selinux" / "_proto",
        into / "csi_hostpath_selinux" / "_proto",
        dirs_exist_ok=True,
    )
    return into


def resolve_commit(commit: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(HERE.parent), "log", "-1", "--format=%h (%s)", commit],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (under a minute)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--doc", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument(
        "--go-binary",
        type=Path,
        default=os.environ.get(GO_BINARY_ENV) or None,
        help="the reference driver's hostpathplugin binary, built elsewhere "
        f"(default: ${GO_BINARY_ENV})",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument("--no-sanity", action="store_true", help="skip the csi-sanity runs")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--commit", help="benchmark our package as of this git commit (default: the work tree)"
    )
    source.add_argument(
        "--driver-src", type=Path, help="a directory holding the csi_hostpath_selinux to run"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("the benchmark needs root: it mounts and attaches loop devices")
    if args.go_binary is None:
        parser.error(
            "name the reference driver's hostpathplugin with --go-binary PATH or "
            f"{GO_BINARY_ENV}=PATH: the benchmark compares against the real reference only"
        )
    if not os.access(args.go_binary, os.X_OK):
        parser.error(f"--go-binary {args.go_binary} is not an executable file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    plan.sanity = plan.sanity and not args.no_sanity
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(
        started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        quick=args.quick,
        machine=machine(),
        go_binary=str(args.go_binary),
        reference_version=reference_version(args.go_binary),
    )
    log(f"reference driver: {args.go_binary} ({results.reference_version})")

    total_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="csi-bench-"))
    try:
        driver_src = args.driver_src
        if args.commit:
            driver_src = export_commit(args.commit, Path(tempfile.mkdtemp(prefix="csi-src-")))
        results.driver_source = (
            f"commit {resolve_commit(args.commit)}"
            if args.commit
            else str(driver_src or "the work tree")
        )
        bench = Bench(
            results,
            plan,
            work,
            args.out,
            go_binary=args.go_binary,
            driver_src=driver_src,
        )
        bench.memory_floor()
        bench.cycles()
        if not args.no_profile and shutil.which("py-spy"):
            bench.profiles()
        bench.scale()
        binary = csi_sanity_binary()
        if plan.sanity and binary:
            bench.sanity(binary)
    finally:
        results.leaked += cleanup_under(work)
        shutil.rmtree(work, ignore_errors=True)
        if args.commit and driver_src:
            shutil.rmtree(driver_src, ignore_errors=True)
    results.durations_s["total"] = time.perf_counter() - total_start
    results.machine["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    (args.out / "results.json").write_text(json.dumps(asdict(results), indent=2) + "\n")
    report.plots(asdict(results), args.out)
    shown = sys.argv[1:] if argv is None else argv
    report.write_markdown(asdict(results), args.doc, args.out, shown)
    log(f"done in {results.durations_s['total']:.0f}s; wrote {args.out} and {args.doc}")
    if results.leaked:
        log(f"cleaned up after the drivers: {results.leaked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
