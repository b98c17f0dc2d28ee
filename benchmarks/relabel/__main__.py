"""`python -m benchmarks.relabel`: context mount versus recursive relabel in the SELinux VM.

Issue 6: for N files on a volume, the time until a pod with label L can use it, with the
driver's context mount (seLinuxMount) and with a recursive relabel (what the container runtime
does without it). Reuses the e2e harness (tests/e2e/vm.py): the cached Debian image, the payload
with the driver's wheel, the QEMU (TCG) boot; the guest program is ``guest.py`` in this directory.
Writes docs/relabel-benchmark.md and docs/relabel-benchmark.png, and the raw numbers to
benchmarks/relabel/results.json (``--report-only`` redraws the report from that file).

Run as root from the repository root; see docs/relabel-benchmark.md for the numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e import vm

from . import report

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
DEFAULT_COUNTS = (10_000, 100_000, 1_000_000)


def parse_repeats(text: str, counts: list[int], default: int) -> dict[str, int]:
    """`N=R,N=R`: repetitions per file count (the others get default)."""
    repeats = {str(n): default for n in counts}
    for item in filter(None, text.split(",")):
        count, _, times = item.partition("=")
        repeats[str(int(count))] = int(times)
    return repeats


def make_payload(work: Path, log: vm.Sink, args: dict[str, object]) -> Path:
    """The e2e payload (driver wheel, dependencies, guest helpers) with this benchmark's init."""
    vm.build_payload(work, log)
    tree = work / "payload"
    bench = tree / "bench"
    bench.mkdir()
    shutil.copy2(HERE / "guest.py", bench / "guest.py")
    (bench / "args.json").write_text(json.dumps(args))
    shutil.copy2(HERE / "guest_init.sh", tree / "init.sh")
    (tree / "init.sh").chmod(0o755)
    image = work / "payload.img"
    image.unlink(missing_ok=True)
    subprocess.run(
        ["mkfs.ext4", "-q", "-L", "e2e-payload", "-d", str(tree), str(image), "1G"], check=True
    )
    return image


def host_facts() -> dict[str, str]:
    qemu = subprocess.run(
        ["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {
        "qemu": qemu[0] if qemu else "unknown",
        "host_cpu": cpu,
        "host_load_before": Path("/proc/loadavg").read_text().strip(),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relabel", description=__doc__)
    parser.add_argument(
        "--counts",
        default=",".join(str(n) for n in DEFAULT_COUNTS),
        help="file counts, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method and N")
    parser.add_argument(
        "--repeats-for", default="", help="per-N overrides, e.g. 1000000=1 (default: none)"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes filling the volume")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds before QEMU dies")
    parser.add_argument("--work", type=Path, help="work directory (default: a new temp dir)")
    parser.add_argument("--docs", type=Path, default=vm.REPO_ROOT / "docs")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help=f"do not boot: redraw the report from {RESULTS.relative_to(vm.REPO_ROOT)}",
    )
    options = parser.parse_args(argv)
    if options.report_only:
        data = json.loads(RESULTS.read_text())
        report.write(data, options.docs)
        return 0

    counts = [int(n) for n in options.counts.split(",") if n]
    args = {
        "counts": counts,
        "repeats": parse_repeats(options.repeats_for, counts, options.repeats),
        "workers": options.workers,
    }
    work = options.work or Path(tempfile.mkdtemp(prefix="csi-relabel-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"relabel benchmark: work directory {work}; {args}")
    started = time.monotonic()
    facts = host_facts()
    try:
        with (work / "harness.log").open("a") as hlog:
            image = vm.ensure_image(hlog)
            payload = make_payload(work, hlog, args)
        result = vm.boot(image, payload, work, echo=sys.stdout, timeout=options.timeout)
    except (vm.E2EError, subprocess.CalledProcessError) as exc:
        print(f"relabel benchmark: harness failed: {exc}", file=sys.stderr)
        return 3
    print(vm.summary(result))
    raw = work / "results" / "relabel.json"
    if not raw.is_file():
        print(f"relabel benchmark: the guest wrote no {raw}", file=sys.stderr)
        return 3
    data = json.loads(raw.read_text())
    facts["host_load_after"] = Path("/proc/loadavg").read_text().strip()
    facts["enforce"] = result.enforce or "unknown"
    facts["boot_and_benchmark_s"] = f"{result.seconds:.0f}"
    facts["whole_run_s"] = f"{time.monotonic() - started:.0f}"
    facts["command"] = " ".join(["python -m benchmarks.relabel", *argv])
    facts["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    data["host"] = facts
    data["args"] = args
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    report.write(data, options.docs)
    print(f"relabel benchmark: {RESULTS}, {options.docs / 'relabel-benchmark.md'} written")
    if "error" in data or result.exit_code != 0 or result.enforce != "Enforcing":
        print(
            f"relabel benchmark: guest exit code {result.exit_code}, SELinux {result.enforce}, "
            f"error {data.get('error', 'none')}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
