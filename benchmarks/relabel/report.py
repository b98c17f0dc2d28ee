"""Turn the relabel benchmark's raw results into docs/relabel-benchmark.md and .png."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MD_NAME = "relabel-benchmark.md"
PNG_NAME = "relabel-benchmark.png"


@dataclass(frozen=True)
class Row:
    files: int
    repeats: int
    context: list[float]
    relabel: list[float]
    chcon: list[float]
    fill_s: float
    volume_bytes: int

    @property
    def context_median(self) -> float:
        return statistics.median(self.context)

    @property
    def relabel_median(self) -> float:
        return statistics.median(self.relabel)

    @property
    def ratio(self) -> float:
        return self.relabel_median / self.context_median


def rows(data: dict[str, Any]) -> list[Row]:
    found = []
    for count in data["counts"]:
        runs = count["runs"]
        context = [r["total_s"] for r in runs if r["method"] == "context"]
        relabel = [r["total_s"] for r in runs if r["method"] == "relabel"]
        if not context or not relabel:
            continue
        found.append(
            Row(
                files=count["files"],
                repeats=min(len(context), len(relabel)),
                context=context,
                relabel=relabel,
                chcon=[r["relabel_s"] for r in runs if r["method"] == "relabel"],
                fill_s=count["fill_s"],
                volume_bytes=count["volume_bytes"],
            )
        )
    return found


def plot(table: list[Row], path: Path, title: str) -> None:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    files = [row.files for row in table]
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    for label, values, style in (
        ("recursive relabel (chcon -R), no seLinuxMount", [r.relabel for r in table], "o-"),
        ('context="L" mount by the driver (seLinuxMount)', [r.context for r in table], "s-"),
    ):
        medians = [statistics.median(v) for v in values]
        low = [m - min(v) for m, v in zip(medians, values, strict=True)]
        high = [max(v) - m for m, v in zip(medians, values, strict=True)]
        ax.errorbar(files, medians, yerr=[low, high], fmt=style, capsize=4, label=label)
    for row in table:
        ax.annotate(
            f"ratio {row.ratio:.0f}x",
            (row.files, row.relabel_median),
            textcoords="offset points",
            xytext=(-8, 10),
            ha="right",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(files, [_count(n) for n in files])
    ax.margins(x=0.2, y=0.25)
    ax.set_xlabel("files on the volume (N)")
    ax.set_ylabel("seconds until a pod with label L can read the volume")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _count(files: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if files >= size and files % size == 0:
            return f"{files // size}{suffix}"
    return str(files)


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def markdown(data: dict[str, Any], table: list[Row]) -> str:
    facts = data.get("facts", {})
    host = data.get("host", {})
    lines = [
        "# Context mount versus recursive relabel (issue 6)",
        "",
        "How long until a pod with SELinux label L can use a volume holding N files: with the",
        'driver\'s `context="L"` mount (what kubelet asks for with seLinuxMount) versus a recursive',
        "relabel of the volume (what the container runtime does without it). Measured in the e2e",
        "suite's SELinux VM (enforcing), against the real driver over its socket.",
        "",
        "## Result",
        "",
        "| N files | runs | context mount, median s | recursive relabel, median s | ratio |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        lines.append(
            f"| {row.files:,} | {row.repeats} | {row.context_median:.2f} | "
            f"{row.relabel_median:.2f} | {row.ratio:.0f}x |"
        )
    lines += ["", f"![time against N, log-log]({PNG_NAME})", ""]
    if len(table) >= 2:
        first, biggest = table[0], table[-1]
        chcon = statistics.median(biggest.chcon)
        growth = math.log(biggest.relabel_median / first.relabel_median) / math.log(
            biggest.files / first.files
        )
        lines += [
            "The context mount takes about the same time whatever N is "
            f"({min(r.context_median for r in table):.2f} to "
            f"{max(r.context_median for r in table):.2f} s: two gRPC calls, a loop device, one "
            "mount, the driver's read-back of the label, and the pod's read). The relabel grows "
            f"about as N^{growth:.2f} from {_count(first.files)} to {_count(biggest.files)} "
            f"files (chcon alone took {chcon:.0f} s for {biggest.files:,} files, about "
            f"{biggest.files / chcon:,.0f} files/s). Absolute times are those of a TCG-emulated "
            "VM, slower than on real hardware; the ratio and the shape are the point.",
            "",
        ]
    lines += [
        "## Command",
        "",
        "As root, from the repository root (needs what `tests/e2e/run.sh` needs, plus matplotlib",
        "for the plot: `pip install -r benchmarks/requirements.txt`):",
        "",
        "```sh",
        f"{host.get('command', 'python -m benchmarks.relabel')}",
        "# the same: benchmarks/relabel/run.sh [options]; --help lists them",
        "python -m benchmarks.relabel --report-only   # redraw this page from results.json",
        "```",
        "",
        "It builds or reuses the e2e VM image (`tests/e2e/vm.py`), makes the e2e payload (the",
        "driver's wheel and its dependencies) with this benchmark's init and guest program",
        "(`benchmarks/relabel/guest_init.sh`, `guest.py`), boots once, and writes this page, the",
        "plot and the raw numbers (`benchmarks/relabel/results.json`).",
        "",
        "## What is timed",
        "",
        "For each N the guest program creates an ext4 image volume through the driver",
        "(CreateVolume, `kind: image`; large enough that mke2fs's default inode count holds N",
        "files), stages it without a label and fills it with N empty files, 1 000 per directory,",
        "with two processes (not timed), then unstages it. Then, for each repetition, with a new",
        "MCS level each time (so the relabel really rewrites every inode's label) and after",
        "`sync; echo 3 > /proc/sys/vm/drop_caches` (cold caches, as on a node where the volume",
        "was not mounted before):",
        "",
        '- **context mount**: NodeStageVolume and NodePublishVolume with `context="L"` in the',
        "  mount flags, then the pod's first read of a file;",
        "- **recursive relabel**: NodeStageVolume and NodePublishVolume without a context, then",
        "  `chcon -R L` on the target path, then the pod's first read.",
        "",
        "The pod is the e2e suite's stand-in: `cat` started with `runcon -t e2e_pod_t -l LEVEL`",
        "(an MCS-constrained domain), so the read succeeds only when the file carries L's level.",
        "After each run (not timed) the program checks that the mount carries `context=` (or not)",
        "and that the last file created reads L, then unpublishes and unstages. The two methods",
        "alternate in order between repetitions.",
        "",
        "## The VM and the host",
        "",
        "| | |",
        "|---|---|",
        "| accelerator | QEMU TCG (no KVM), `-smp 2 -m 2048`, virtio disks on sparse files |",
    ]
    for key, name in (
        ("qemu", "QEMU"),
        ("host_cpu", "host CPU"),
        ("host_load_before", "host load before (loadavg)"),
        ("host_load_after", "host load after (loadavg)"),
    ):
        if key in host:
            lines.append(f"| {name} | {host[key]} |")
    for key, name in (
        ("kernel", "guest kernel"),
        ("cpus", "guest CPUs"),
        ("cpu_model", "guest CPU model"),
        ("memory", "guest memory"),
        ("selinux", "SELinux"),
        ("chcon", "chcon"),
        ("python", "guest Python"),
    ):
        if key in facts:
            lines.append(f"| {name} | {facts[key]} |")
    for key, name in (
        ("date", "measured"),
        ("boot_and_benchmark_s", "boot and benchmark, s"),
        ("whole_run_s", "whole run, s"),
    ):
        if key in host:
            lines.append(f"| {name} | {host[key]} |")
    lines += [
        "",
        "## Every run",
        "",
        "| N files | volume size | fill (not timed), s | context mount runs, s | relabel runs, s "
        "| of which chcon, s |",
        "|---:|---:|---:|---|---|---|",
    ]
    for row in table:
        lines.append(
            f"| {row.files:,} | {row.volume_bytes / 2**30:.1f} GiB | {row.fill_s:.0f} | "
            f"{_seconds(row.context)} | {_seconds(row.relabel)} | {_seconds(row.chcon)} |"
        )
    notes = data.get("notes", [])
    lines += [
        "",
        "## Limits",
        "",
        "- TCG emulation: absolute times are slower than on real hardware; both paths pay the",
        "  same emulation, and the relabel's cost is per file while the mount's is not.",
        "- The host is shared (its load averages are in the table above) and TCG timings vary",
        "  from run to run: the plot's bars show the spread (min to max) around each median.",
        "- `chcon -R` relabels with one thread. Container runtimes (go-selinux) walk the tree",
        "  with a few parallel workers; with the VM's 2 CPUs that saves at most about half.",
        "- The files are empty: a relabel costs one `lsetxattr` per inode whatever the size, so",
        "  the contents would not change the relabel path (they would make the fill slower).",
        "- The pod is a process in an MCS-constrained domain, not a container.",
        *[f"- {note}" for note in notes],
    ]
    if "error" in data:
        lines += ["", f"**The guest program failed:** `{data['error']}` (partial results above)."]
    return "\n".join(lines) + "\n"


def write(data: dict[str, Any], docs: Path) -> None:
    table = rows(data)
    docs.mkdir(parents=True, exist_ok=True)
    kernel = data.get("facts", {}).get("kernel", "?")
    plot(
        table,
        docs / PNG_NAME,
        f"Time until a pod with label L can read a volume of N files\n"
        f"(SELinux enforcing, Linux {kernel}, QEMU TCG, 2 vCPUs; median, bars: min-max)",
    )
    (docs / MD_NAME).write_text(markdown(data, table))
