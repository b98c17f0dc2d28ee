"""Pod start with real pods on the enforcing SELinux node: seLinuxChangePolicy MountOption
(kubelet sends context=, the driver mounts the volume with the pod's label) against Recursive
(no context=, containerd relabels every file of the volume before the container starts), for
volumes holding 0, 10k, 100k (and, when asked, 1M) files. Issue 15, item 4.

Not a test: a benchmark run by hand. It starts the harness's cluster (tests/cluster), joins the
SELinux VM node (tests/cluster/selinux), and on that node, per file count:

1. a claim (xfs: its inodes are allocated on demand, so 1M files fit in a small sparse image),
   filled by a pod (python3 in the driver's image) with one level;
2. for each policy and repeat: a pod with another level (a new one each time, so Recursive
   really relabels every file) is created, and the time from `kubectl apply` to the pod's phase
   Running is measured (polled every 0.2 s; kubelet's own startedAt is recorded too, with its
   1 s resolution); the pod is deleted and the script waits until the node has no mount of the
   volume left before the next pod.
3. the label step alone, from the components' own logs (benchmarks/podstart_logs.py): the
   driver's NodeStageVolume + NodePublishVolume durations and containerd's CreateContainer span,
   in which containerd relabels under Recursive.

A pod that is not Running within --pod-timeout is recorded as such, and the run goes on.

Writes docs/podstart-benchmark.json, .md and .png (matplotlib from benchmarks/requirements.txt).

    python3 -m benchmarks.podstart --files 0,10000,100000,1000000 --repeats 3 --once-above 100000
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.podstart_logs import (
    create_container_attempts,
    create_container_span,
    driver_rpc_ms,
)
from tests.cluster import manifest
from tests.cluster.cluster import Cluster
from tests.cluster.deploy import deploy_driver
from tests.cluster.kube import namespace, pvc
from tests.cluster.selinux.node import SelinuxNode
from tests.cluster.selinux.node_vm import NodeVM
from tests.cluster.selinux.test_selinux_node import app_pod, volume_of

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
NAME = "podstart-benchmark"
POLICIES = ("MountOption", "Recursive")


def size_for(files: int) -> str:
    return "320Mi" if files <= 10_000 else "1Gi" if files <= 200_000 else "3Gi"


FILL = """
import os, sys, time
n = int(sys.argv[1]); t0 = time.monotonic()
for d in range(0, n, 1000):
    os.mkdir(f"/data/d{d // 1000}")
    for i in range(d, min(n, d + 1000)):
        open(f"/data/d{d // 1000}/f{i}", "w").close()
os.sync()
print(f"filled {n} files in {time.monotonic() - t0:.1f} s")
"""


def level(i: int) -> str:
    return f"s0:c{100 + i},c{600 + i}"


def measure(
    node: Any, files_list: list[int], repeats: int, once_above: int, pod_timeout: float
) -> list[dict[str, Any]]:

    cluster = node.cluster
    results = []
    counter = 0
    for files in files_list:
        with namespace(cluster, f"podstart-{files}") as kube:
            fill = app_pod(kube, "fill", "data", level="s0:c7,c8")
            fill["spec"]["restartPolicy"] = "Never"
            fill["spec"]["containers"][0]["command"] = ["python3", "-c", FILL, str(files)]
            t0 = time.monotonic()
            kube.apply(pvc("data", "hostpath-selinux-xfs", size_for(files)), fill)
            kube.wait_pod("fill", "Succeeded", 7200)
            fill_s = time.monotonic() - t0
            print(f"{files} files: {kube.logs('fill').strip()} ({fill_s:.0f} s with the pod)")
            pv_name, _ = volume_of(kube, "data")
            kube.delete("pod/fill")
            unmounted(kube, node, pv_name)
            runs = []
            for r in range(repeats if files <= once_above else 1):
                for policy in POLICIES:
                    counter += 1
                    name = f"{policy.lower()}-{r}"
                    run = start_pod(kube, node, name, level(counter), policy, pod_timeout)
                    print(f"{files} files: {run}", flush=True)
                    runs.append(run)
                    deleted(kube, name)
                    unmounted(kube, node, pv_name)
            results.append(
                {"files": files, "fill_s": round(fill_s, 1), "size": size_for(files), "runs": runs}
            )
            kube.delete("pvc/data")
    return results


def start_pod(
    kube: Any, node: Any, name: str, pod_level: str, policy: str, timeout: float
) -> dict[str, Any]:
    """Create one pod with `policy` and a new level; time it to Running; read the label step
    from the driver's and containerd's logs."""
    pod = app_pod(kube, name, "data", level=pod_level, change_policy=policy)
    log_before = len(node.driver_log())
    t = time.monotonic()
    kube.apply(pod)
    running = True
    while kube.pod_phase(name) != "Running":
        if time.monotonic() - t > timeout:
            running = False
            print(f"{name} not Running after {timeout:.0f} s: {kube.diagnose(name)}", flush=True)
            break
        time.sleep(0.2)
    wall = time.monotonic() - t
    obj = kube.get("pod", name)
    run: dict[str, Any] = {
        "policy": policy,
        "level": pod_level,
        "running": running,
        "apply_to_running_s": round(wall, 2),
    }
    if running:
        created = _ts(obj["metadata"]["creationTimestamp"])
        started = _ts(obj["status"]["containerStatuses"][0]["state"]["running"]["startedAt"])
        run["kubelet_created_to_started_s"] = started - created
        run["volume_label"] = kube.exec(name, "ls", "-Zd", "/data").split()[0]
    run["driver_ms"] = {
        method: round(ms, 1) for method, ms in driver_rpc_ms(node.driver_log()[log_before:]).items()
    }
    containerd_log = node.sh(
        "grep -e 'RunPodSandbox for' -e 'CreateContainer within' /results/containerd.log"
    )
    try:
        span = create_container_span(containerd_log, name, obj["metadata"]["uid"], "app")
        run["create_container_s"] = round(span.seconds, 2)
        run["create_container_calls"] = span.calls
        run["create_container_attempts"] = [
            [attempt, None if sec is None else round(sec, 1)]
            for attempt, sec in create_container_attempts(
                containerd_log, name, obj["metadata"]["uid"], "app"
            )
        ]
    except LookupError as exc:
        run["create_container_s"] = None
        run["create_container_error"] = str(exc)
    return run


def _ts(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def deleted(kube: Any, name: str) -> None:
    """Delete a pod and wait until it is gone. A pod whose container containerd is still
    relabelling (Recursive, a large volume) goes only when that relabel ends: minutes, longer
    than one kubectl call may wait."""
    kube.delete(f"pod/{name}", wait=False)
    kube.wait(
        f"pod {name} deleted",
        lambda: not kube.kubectl("get", "pod", name, "--ignore-not-found", "-o", "name").strip(),
        1800,
    )


def unmounted(kube: Any, node: Any, pv_name: str) -> None:
    kube.wait(
        f"no mount of {pv_name} on the node",
        lambda: not [line for line in node.mountinfo() if pv_name in line],
        600,
    )


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _cell(
    runs: list[dict[str, Any]],
    value: Callable[[dict[str, Any]], float | None],
    fmt: str = "{:.1f}",
) -> str:
    """The median of value(run) over the runs that have one, every value in brackets."""
    values = [v for v in map(value, runs) if v is not None]
    if not values:
        return "-"
    every = ", ".join(fmt.format(v) for v in values)
    return f"{fmt.format(statistics.median(values))} ({every})"


def _start_cell(runs: list[dict[str, Any]]) -> str:
    done = [r["apply_to_running_s"] for r in runs if r.get("running", True)]
    late = [r["apply_to_running_s"] for r in runs if not r.get("running", True)]
    parts = [f"{x:.1f}" for x in done] + [f"not Running after {x:.0f}" for x in late]
    head = f"{statistics.median(done):.1f}" if done and not late else "-"
    return f"{head} ({', '.join(parts)})"


def _stage_publish_ms(run: dict[str, Any]) -> float | None:
    ms = run.get("driver_ms") or {}
    return sum(ms.values()) if ms else None


def _create_container_s(run: dict[str, Any]) -> float | None:
    value = run.get("create_container_s")
    return None if value is None else float(value)


def report(data: dict[str, Any]) -> str:
    lines = [
        "# Pod start on the enforcing SELinux node: MountOption against Recursive",
        "",
        "Real pods on the SELinux VM node of the cluster harness (kubelet v1.37.2, containerd",
        "with `enable_selinux = true`, enforcing; QEMU TCG on a shared 2-core machine): time from",
        "`kubectl apply` of a pod with a new SELinux level to its phase Running, on an xfs volume",
        "of this driver holding N empty files in directories of 1000. MountOption: kubelet sends",
        "`context=` and the driver mounts with the pod's label, nothing is relabelled. Recursive:",
        "no `context=`, containerd relabels every file before the container starts.",
        "",
        f"Command: `{data['command']}` ({data['date']}; whole run {data['wall_s']:.0f} s).",
        "",
        "| files | MountOption (s) | Recursive (s) | Recursive / MountOption | fill (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in data["results"]:
        by = {p: [r for r in row["runs"] if r["policy"] == p] for p in POLICIES}
        m = _median([r["apply_to_running_s"] for r in by["MountOption"] if r.get("running", True)])
        rc = by["Recursive"]
        r = _median([x["apply_to_running_s"] for x in rc if x.get("running", True)])
        late = any(not x.get("running", True) for x in rc)
        ratio = "-" if m is None or r is None or late else f"{r / m:.2f}"
        lines.append(
            f"| {row['files']:,} | {_start_cell(by['MountOption'])} | {_start_cell(rc)} "
            f"| {ratio} | {row['fill_s']:.0f} |"
        )
    lines += [
        "",
        "Medians, every run in brackets. Only the file counts in the table were measured;",
        "nothing is extrapolated.",
        "",
        "## The label step alone",
        "",
        "From the components' own logs, per pod: the driver's NodeStageVolume + NodePublishVolume",
        "(its -v=5 log gives each RPC's duration; under MountOption these mount with `context=`,",
        "which is the whole label step) and containerd's CRI CreateContainer (from its log's",
        "`CreateContainer within sandbox … for container` to `… returns container id`; under",
        "Recursive it relabels every file of the volume in this call, under MountOption it only",
        "creates the container). Calls: CreateContainer requests kubelet made before one",
        "succeeded (kubelet abandons a call after its 2 min runtime request timeout).",
        "",
        "| files | MountOption: stage + publish (ms) | MountOption: CreateContainer (s) "
        "| Recursive: stage + publish (ms) | Recursive: CreateContainer (s) | Recursive: calls |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["results"]:
        by = {p: [r for r in row["runs"] if r["policy"] == p] for p in POLICIES}
        calls = [r.get("create_container_calls") for r in by["Recursive"]]
        lines.append(
            f"| {row['files']:,} | {_cell(by['MountOption'], _stage_publish_ms, '{:.0f}')} "
            f"| {_cell(by['MountOption'], _create_container_s)} "
            f"| {_cell(by['Recursive'], _stage_publish_ms, '{:.0f}')} "
            f"| {_cell(by['Recursive'], _create_container_s)} "
            f"| {', '.join(str(c) for c in calls if c is not None) or '-'} |"
        )
    retried = [
        (row["files"], run)
        for row in data["results"]
        for run in row["runs"]
        if len(run.get("create_container_attempts") or []) > 1
    ]
    if retried:
        lines += [
            "",
            "Pods whose container kubelet created more than once (each attempt: containerd's",
            "CreateContainer from its first call to its result; '-' never returned):",
            "",
            "| files | policy | pod Running | attempts: seconds each |",
            "|---:|---|---|---|",
        ]
        for files, run in retried:
            each = ", ".join(
                f"{a}: {'-' if sec is None else f'{sec:.0f}'}"
                for a, sec in run["create_container_attempts"]
            )
            state = "yes" if run.get("running", True) else "no"
            lines.append(f"| {files:,} | {run['policy']} | {state} | {each} |")
    lines += ["", *data.get("notes", [])]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    """Left: kubectl apply to Running (a pod that never ran drawn as a triangle at the time the
    wait ended). Right: the label step alone, log scale."""
    fig, (start_ax, step_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for policy, color in zip(POLICIES, ("tab:blue", "tab:orange"), strict=True):
        xs, ys, late_x, late_y = [], [], [], []
        step_x, step_y = [], []
        for row in data["results"]:
            runs = [r for r in row["runs"] if r["policy"] == policy]
            x = max(row["files"], 1)
            done = [r["apply_to_running_s"] for r in runs if r.get("running", True)]
            late = [r["apply_to_running_s"] for r in runs if not r.get("running", True)]
            if done and not late:
                xs.append(x)
                ys.append(statistics.median(done))
            if late:
                late_x.append(x)
                late_y.append(max(late))
            if policy == "MountOption":
                step = [_stage_publish_ms(r) for r in runs]
                vals = [v / 1000 for v in step if v is not None]
            else:
                vals = [r["create_container_s"] for r in runs if r.get("create_container_s")]
            if vals:
                step_x.append(x)
                step_y.append(statistics.median(vals))
        start_ax.plot(xs, ys, marker="o", color=color, label=policy)
        if late_x:
            start_ax.plot(
                late_x, late_y, "^", color=color, markersize=10, label=f"{policy}: never Running"
            )
        what = (
            "driver stage + publish"
            if policy == "MountOption"
            else "containerd CreateContainer (relabels)"
        )
        step_ax.plot(step_x, step_y, marker="o", color=color, label=f"{policy}: {what}")
    for ax in (start_ax, step_ax):
        ax.set_xscale("log")
        ax.set_xlabel("files on the volume (0 plotted at 1)")
        ax.legend(fontsize=8)
    start_ax.set_yscale("log")
    start_ax.set_ylabel("kubectl apply to Running (s)")
    start_ax.set_title("Pod start (medians)")
    step_ax.set_yscale("log")
    step_ax.set_ylabel("seconds")
    step_ax.set_title("The label step alone (medians)")
    fig.suptitle("Enforcing SELinux node, kubelet v1.37.2 + containerd, TCG")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", default="0,10000,100000")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--once-above",
        type=int,
        default=10**9,
        help="file counts above this get one pod per policy, not --repeats",
    )
    parser.add_argument(
        "--pod-timeout", type=float, default=2400, help="seconds a pod may take to Running"
    )
    parser.add_argument("--report-only", action="store_true", help="redo .md/.png from .json")
    args = parser.parse_args()
    out = DOCS / f"{NAME}.json"
    if args.report_only:
        data = json.loads(out.read_text())
    else:
        data = run(args)
        out.write_text(json.dumps(data, indent=1) + "\n")
    (DOCS / f"{NAME}.md").write_text(report(data))
    plot(data, DOCS / f"{NAME}.png")
    print(report(data))
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:

    t0 = time.monotonic()
    components = manifest.load()
    lock = os.open("/var/lib", os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(lock, fcntl.LOCK_EX)  # one cluster on the machine at a time (conftest.py)
    state = manifest.cache_dir() / "harness-state.json"
    stale = Cluster.recover(components, state)
    if stale:
        raise SystemExit(f"a killed earlier session left these: {stale}")
    cluster = Cluster(
        components, keep_logs=manifest.cache_dir() / "last-run-logs", state_file=state
    )
    try:
        cluster.start()
        deploy_driver(cluster)
        node = SelinuxNode(cluster, NodeVM(cluster, cluster.root / "selinux-node"))
        try:
            node.join()
            files = [int(x) for x in args.files.split(",")]
            results = measure(node, files, args.repeats, args.once_above, args.pod_timeout)
        finally:
            problems = node.leave()
            shutil.rmtree(node.vm.work, ignore_errors=True)
            if problems:
                print(f"leaving the node: {problems}", file=sys.stderr)
    finally:
        cluster.stop()
        left = cluster.leftovers()
        os.close(lock)
        if left:
            print(f"the cluster left these on the host: {left}", file=sys.stderr)
    return {
        "command": (
            f"python3 -m benchmarks.podstart --files {args.files} --repeats {args.repeats}"
            + (f" --once-above {args.once_above}" if args.once_above < 10**9 else "")
        ),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_s": time.monotonic() - t0,
        "results": results,
    }


if __name__ == "__main__":
    sys.exit(main())
