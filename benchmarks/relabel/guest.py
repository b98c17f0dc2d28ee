"""Guest side of the relabel benchmark: runs inside the e2e VM (SELinux enforcing).

usage: python3 guest.py ARGS_JSON RESULTS_JSON

For each file count N it creates an ext4 image volume through the driver, stages it without a
label, fills it with N empty files (not timed), unstages it, and then times, a few times each,
how long it takes until a pod with label L can read a file of the volume:

- ``context``: NodeStageVolume and NodePublishVolume with ``context="L"`` in the mount flags (what
  kubelet sends with seLinuxMount), then the pod's read;
- ``relabel``: NodeStageVolume and NodePublishVolume without a context, then ``chcon -R L`` on
  the target (what the container runtime does without seLinuxMount), then the pod's read.

Every timed run starts cold: the volume is unstaged (its superblock and inodes are gone) and the
page cache is dropped. Each repetition uses a label (MCS level) no earlier run used, so the
recursive relabel really rewrites every inode. The pod is the e2e suite's stand-in, a process in
the MCS-constrained domain e2e_pod_t at the label's level (runcon).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from e2e_lib import (
    Driver,
    Kubelet,
    MiB,
    Volume,
    as_pod,
    context_flag,
    has_context,
    label_of,
    mounts_at,
    run,
)

FILES_PER_DIR = 1000
#: mke2fs's default bytes per inode for filesystems of 512 MiB and more.
INODE_RATIO = 16384
CHCON_TIMEOUT = 7200
PROBE = "probe.txt"
PROBE_TEXT = "the pod can read this\n"


def label_for(index: int) -> str:
    """A label with an MCS level of its own for each timed repetition."""
    return f"system_u:object_r:container_file_t:s0:c{100 + index},c{400 + index}"


def volume_bytes(files: int) -> int:
    """An ext4 size whose default inode count holds the files and directories with room."""
    inodes = files + files // FILES_PER_DIR + 1000
    wanted = inodes * INODE_RATIO * 5 // 4
    return max(512 * MiB, -(-wanted // MiB) * MiB)


@dataclass
class Run:
    method: str
    repetition: int
    label: str
    mount_s: float  # NodeStageVolume + NodePublishVolume
    relabel_s: float  # chcon -R (0 for the context mount)
    probe_s: float  # the pod's first read
    total_s: float


@dataclass
class Count:
    files: int
    volume_bytes: int
    fill_s: float
    inodes_used: int
    runs: list[Run] = field(default_factory=list)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def fill(root: str, files: int, workers: int) -> None:
    """Create files-1 empty files in directories of FILES_PER_DIR, plus the probe file."""
    Path(root, PROBE).write_text(PROBE_TEXT)
    dirs = -(-(files - 1) // FILES_PER_DIR)
    children = []
    for worker in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for index in range(worker, dirs, workers):
                    directory = os.path.join(root, f"d{index:05d}")
                    os.mkdir(directory)
                    first = index * FILES_PER_DIR
                    for number in range(first, min(first + FILES_PER_DIR, files - 1)):
                        fd = os.open(
                            f"{directory}/f{number:07d}",
                            os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                            0o644,
                        )
                        os.close(fd)
            except BaseException as exc:
                print(f"fill worker {worker} failed: {exc!r}", flush=True)
                code = 1
            os._exit(code)
        children.append(pid)
    failed = [pid for pid in children if os.waitpid(pid, 0)[1] != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} fill workers failed")


def count_inodes(root: str) -> int:
    st = os.statvfs(root)
    return st.f_files - st.f_ffree


def wait_itable_zeroed(device: str, timeout: float, stall: float = 20) -> None:
    """Wait while ext4's lazy init thread zeroes inode tables (it would compete with the timed
    runs for the disk otherwise): until none is left, nothing changed for stall seconds, or
    timeout seconds passed."""
    deadline = time.monotonic() + timeout
    last: list[str] = []
    changed = time.monotonic()
    while True:
        groups = [
            line
            for line in run(["dumpe2fs", device], check=False).splitlines()
            if re.match(r"Group \d+:", line)
        ]
        left = [line for line in groups if "ITABLE_ZEROED" not in line]
        if left != last:
            last, changed = left, time.monotonic()
            print(f"{device}: {len(left)} of {len(groups)} inode tables not zeroed", flush=True)
        now = time.monotonic()
        if not left or now > deadline or now - changed > stall:
            for line in left[:5]:
                print(f"  not zeroed: {line}")
            return
        time.sleep(2)


def probe(label: str, target: str) -> None:
    proc = as_pod(label, ["cat", os.path.join(target, PROBE)])
    if proc.returncode != 0 or proc.stdout != PROBE_TEXT:
        raise RuntimeError(f"the pod with {label} cannot read {target}/{PROBE}: {proc.stderr}")


def deep_file(target: str, files: int) -> str:
    """The last file the fill created (in the last directory)."""
    if files < 2:
        return os.path.join(target, PROBE)
    number = files - 2
    return os.path.join(target, f"d{number // FILES_PER_DIR:05d}", f"f{number:07d}")


def timed(
    kubelet: Kubelet, volume: Volume, method: str, repetition: int, label: str, files: int
) -> Run:
    flags = [context_flag(label)] if method == "context" else []
    drop_caches()
    started = time.perf_counter()
    kubelet.stage(volume, flags)
    target = kubelet.target_for(volume)
    kubelet.publish(volume, target, flags)
    mounted = time.perf_counter()
    if method == "relabel":
        # Not e2e_lib.run: its 120 s limit is less than a million files take under TCG.
        subprocess.run(["chcon", "-R", label, target], check=True, timeout=CHCON_TIMEOUT)
    relabelled = time.perf_counter()
    probe(label, target)
    done = time.perf_counter()
    # Not timed: the volume really carries the label, down to the last file.
    (entry,) = mounts_at(target)
    if has_context(entry, label) != (method == "context"):
        raise RuntimeError(f"{method}: unexpected mount options: {entry.line}")
    last = deep_file(target, files)
    if label_of(last) != label:
        raise RuntimeError(f"{method}: {last} does not carry {label}")
    kubelet.unpublish(volume, target)
    kubelet.unstage(volume)
    result = Run(
        method=method,
        repetition=repetition,
        label=label,
        mount_s=mounted - started,
        relabel_s=relabelled - mounted,
        probe_s=done - relabelled,
        total_s=done - started,
    )
    print(f"BENCH: N={files} {method} rep {repetition}: {result.total_s:.3f} s {asdict(result)}")
    return result


def facts() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    chcon = run(["chcon", "--version"]).splitlines()[0]
    return {
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
        "cpu_model": cpu,
        "memory": memory,
        "selinux": run(["getenforce"]).strip(),
        "python": platform.python_version(),
        "chcon": chcon,
        "policy": run(["sestatus"], check=False).strip().replace("\n", "; "),
    }


def main(args_path: str, out_path: str) -> int:
    args = json.loads(Path(args_path).read_text())
    counts: list[int] = args["counts"]
    repeats: dict[str, int] = args["repeats"]
    workers: int = args.get("workers", 2)
    out: dict[str, object] = {"facts": facts(), "counts": []}
    print(f"BENCH: facts {out['facts']}", flush=True)
    results: list[dict[str, object]] = []
    out["counts"] = results
    driver = Driver()
    kubelet = Kubelet(driver)
    label_index = 0
    code = 0
    try:
        for files in counts:
            size = volume_bytes(files)
            volume = kubelet.create(kubelet.mount_capability("ext4"), {"kind": "image"}, size=size)
            try:
                kubelet.stage(volume, ["init_itable=0"])
            except Exception as exc:
                print(f"staging with init_itable=0 refused ({exc}); staging without")
                kubelet.stage(volume)
            started = time.perf_counter()
            fill(volume.staging_path, files, workers)
            os.sync()
            fill_s = time.perf_counter() - started
            used = count_inodes(volume.staging_path)
            print(f"BENCH: N={files} filled in {fill_s:.1f} s; {used} inodes used", flush=True)
            (entry,) = mounts_at(volume.staging_path)
            wait_itable_zeroed(entry.source, timeout=600)
            print(run(["df", "-i", "-h", volume.staging_path]).rstrip())
            kubelet.unstage(volume)
            entry_out = Count(files=files, volume_bytes=size, fill_s=fill_s, inodes_used=used)
            for repetition in range(repeats.get(str(files), 1)):
                # Alternate the order so neither method always runs right after the fill.
                order = ("context", "relabel") if repetition % 2 == 0 else ("relabel", "context")
                for method in order:
                    entry_out.runs.append(
                        timed(kubelet, volume, method, repetition, label_for(label_index), files)
                    )
                label_index += 1
            kubelet.delete(volume)
            results.append(asdict(entry_out))
            Path(out_path).write_text(json.dumps(out, indent=1))  # partial results survive
    except Exception as exc:
        print(f"BENCH: failed: {exc!r}", flush=True)
        out["error"] = repr(exc)
        code = 1
    finally:
        for line in kubelet.cleanup():
            print(line)
        driver.stop()
    Path(out_path).write_text(json.dumps(out, indent=1))
    print(f"BENCH: wrote {out_path}", flush=True)
    return code


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__.splitlines()[2], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
