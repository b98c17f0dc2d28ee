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

Writes docs/podstart-benchmark.json, .md and .png (matplotlib from benchmarks/requirements.txt).

    python3 -m benchmarks.podstart --files 0,10000,100000 --repeats 2
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
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

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


def measure(node: Any, files_list: list[int], repeats: int) -> list[dict[str, Any]]:

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
            for r in range(repeats):
                for policy in POLICIES:
                    counter += 1
                    name = f"{policy.lower()}-{r}"
                    pod = app_pod(kube, name, "data", level=level(counter), change_policy=policy)
                    t = time.monotonic()
                    kube.apply(pod)
                    while kube.pod_phase(name) != "Running":
                        if time.monotonic() - t > 7200:
                            raise TimeoutError(f"{name} not Running: {kube.diagnose(name)}")
                        time.sleep(0.2)
                    wall = time.monotonic() - t
                    obj = kube.get("pod", name)
                    created = _ts(obj["metadata"]["creationTimestamp"])
                    started = _ts(
                        obj["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
                    )
                    ls = kube.exec(name, "ls", "-Zd", "/data").split()[0]
                    run = {
                        "policy": policy,
                        "repeat": r,
                        "level": level(counter),
                        "apply_to_running_s": round(wall, 2),
                        "kubelet_created_to_started_s": started - created,
                        "volume_label": ls,
                    }
                    print(f"{files} files: {run}", flush=True)
                    runs.append(run)
                    kube.delete(f"pod/{name}")
                    unmounted(kube, node, pv_name)
            results.append(
                {"files": files, "fill_s": round(fill_s, 1), "size": size_for(files), "runs": runs}
            )
            kube.delete("pvc/data")
    return results


def _ts(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def unmounted(kube: Any, node: Any, pv_name: str) -> None:
    kube.wait(
        f"no mount of {pv_name} on the node",
        lambda: not [line for line in node.mountinfo() if pv_name in line],
        600,
    )


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
        mo = [r["apply_to_running_s"] for r in row["runs"] if r["policy"] == "MountOption"]
        rc = [r["apply_to_running_s"] for r in row["runs"] if r["policy"] == "Recursive"]
        m, r = statistics.median(mo), statistics.median(rc)
        lines.append(
            f"| {row['files']:,} | {m:.1f} ({', '.join(f'{x:.1f}' for x in mo)}) "
            f"| {r:.1f} ({', '.join(f'{x:.1f}' for x in rc)}) | {r / m:.2f} | {row['fill_s']:.0f} |"
        )
    lines += [
        "",
        "Medians, every run in brackets. Only the file counts in the table were measured;",
        "nothing is extrapolated.",
        "",
        *data.get("notes", []),
    ]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:

    fig, ax = plt.subplots(figsize=(6, 4))
    for policy in POLICIES:
        xs, ys = [], []
        for row in data["results"]:
            vals = [r["apply_to_running_s"] for r in row["runs"] if r["policy"] == policy]
            xs.append(max(row["files"], 1))
            ys.append(statistics.median(vals))
        ax.plot(xs, ys, marker="o", label=policy)
    ax.set_xscale("log")
    ax.set_xlabel("files on the volume (0 plotted at 1)")
    ax.set_ylabel("kubectl apply to Running (s)")
    ax.set_title("Pod start on the enforcing SELinux node (TCG)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", default="0,10000,100000")
    parser.add_argument("--repeats", type=int, default=1)
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
            results = measure(node, files, args.repeats)
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
        "command": f"python3 -m benchmarks.podstart --files {args.files} --repeats {args.repeats}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_s": time.monotonic() - t0,
        "results": results,
    }


if __name__ == "__main__":
    sys.exit(main())
