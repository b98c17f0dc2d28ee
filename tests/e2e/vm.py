"""Build, cache and boot the SELinux QEMU VM that the e2e suite runs in.

The root image is a Debian bookworm rootfs made by ``image/build.sh`` (debootstrap, Debian's
refpolicy plus ``image/container.cil`` for ``container_file_t`` and the pod stand-in domain
``e2e_pod_t``, labelled with setfiles). It is cached outside the
repository, keyed by a hash of every file in ``image/``, and built under a lock. Each run boots a
copy-on-write qcow2 overlay of it, so the cache stays clean, with two more virtio disks: the
payload (the driver's wheel installed with its dependencies, pytest, the guest suite and the
guest init script) and an empty results disk that is read back with debugfs after shutdown.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

HERE = Path(__file__).resolve().parent
IMAGE_DIR = HERE / "image"
GUEST_DIR = HERE / "guest"
#: Shell functions every guest init sources (as /payload/guest_lib.sh).
GUEST_LIB = HERE / "guest_lib.sh"
REPO_ROOT = HERE.parent.parent

CACHE_ENV = "CSI_E2E_CACHE"
MIRROR_ENV = "CSI_E2E_MIRROR"
TIMEOUT_ENV = "CSI_E2E_TIMEOUT"
GUEST_ARGS_ENV = "CSI_E2E_GUEST_ARGS"
REPO_ENV = "CSI_E2E_REPO"
DEFAULT_CACHE = Path("/var/cache/csi-hostpath-selinux-e2e")
DEFAULT_BOOT_TIMEOUT = 1500.0
BUILD_TIMEOUT = 2400.0

RESULT_RE = re.compile(r"E2E-RESULT: exit=(-?\d+)")
ENFORCE_RE = re.compile(r"E2E-ENFORCE: (\S+)(?: reason=(.*))?")


class Sink(Protocol):
    """Where harness and console output goes (a text file, sys.stdout, or both)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class E2EError(Exception):
    """The harness itself failed (build, payload or boot), as opposed to a guest test failing."""


@dataclass(frozen=True)
class VMImage:
    """A cached, bootable root image with the kernel and initrd taken out of its /boot."""

    root: Path
    kernel: Path
    initrd: Path
    key: str


@dataclass
class BootResult:
    """What one boot produced: the console, the guest's pytest exit code and its report."""

    console_log: Path
    console: list[str] = field(default_factory=list)
    exit_code: int | None = None
    enforce: str | None = None
    enforce_reason: str | None = None
    timed_out: bool = False
    junit_xml: str | None = None
    seconds: float = 0.0

    def failures(self) -> list[str]:
        """The guest's failing tests with their messages (from JUnit XML, else console lines)."""
        found: list[str] = []
        if self.junit_xml:
            root = ET.fromstring(self.junit_xml)  # noqa: S314 - our own guest wrote this file
            for case in root.iter("testcase"):
                for tag in ("failure", "error"):
                    for node in case.findall(tag):
                        name = f"{case.get('classname', '')}::{case.get('name', '')}"
                        message = (node.get("message") or "").strip()
                        tail = "\n".join((node.text or "").strip().splitlines()[-30:])
                        found.append(f"{tag.upper()} {name}: {message}\n{tail}")
        if not found:
            found = [
                line
                for line in self.console
                if " FAILED" in line or " ERROR" in line or line.startswith(("E ", "FAILED "))
            ]
        return found


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (CSI_E2E_MIRROR overrides it)."""
    override = os.environ.get(MIRROR_ENV)
    if override:
        return override
    sources = [Path("/etc/apt/sources.list")]
    sources_d = Path("/etc/apt/sources.list.d")
    if sources_d.is_dir():
        sources += sorted(sources_d.iterdir())
    for source in sources:
        if not source.is_file():
            continue
        for uri in _mirror_candidates(source.read_text(errors="replace")):
            if not uri.rstrip("/").endswith(("-security", "-debug", "-ports")):
                return uri
    raise E2EError(f"no Debian mirror found in /etc/apt/sources.list*; set {MIRROR_ENV}")


def _mirror_candidates(text: str) -> Iterator[str]:
    """URIs of Debian archives in one sources file (one-line or deb822 format)."""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("deb "):
            parts = [p for p in line.split() if not p.startswith("[")]
            # deb [opts] URI SUITE ...: options in brackets were dropped above.
            if len(parts) >= 3 and "bookworm" in parts[2] and "/debian" in parts[1]:
                yield parts[1]
        elif line.startswith("URIs:"):
            for uri in line.split()[1:]:
                if "/debian" in uri:
                    yield uri


def recipe_key() -> str:
    """A hash of the image recipe: every file in image/ (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(IMAGE_DIR.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cached_image(directory: Path, key: str) -> VMImage | None:
    root = directory / "root.img"
    kernel = directory / "vmlinuz"
    initrd = directory / "initrd.img"
    if all(p.is_file() for p in (root, kernel, initrd)):
        return VMImage(root=root, kernel=kernel, initrd=initrd, key=key)
    return None


def ensure_image(log: Sink) -> VMImage:
    """Return the cached image for the current recipe, building it first if needed."""
    base = cache_dir()
    key = recipe_key()
    target = base / f"image-{key}"
    with _locked(base / "build.lock"):
        image = _cached_image(target, key)
        if image is not None:
            log.write(f"e2e: reusing cached VM image {target}\n")
            return image
        work = base / f"work-{key}"
        staging = base / f"image-{key}.partial"
        _unmount_below(work)  # an interrupted build may have left /proc mounted in its chroot
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        log.write(f"e2e: building VM image {target} (recipe {key})\n")
        log.flush()
        started = time.monotonic()
        argv = [
            "bash",
            str(IMAGE_DIR / "build.sh"),
            debian_mirror(),
            str(work),
            str(base / "debs"),
            str(staging),
        ]
        code = _run_streamed(argv, log, BUILD_TIMEOUT)
        _unmount_below(work)
        shutil.rmtree(work, ignore_errors=True)
        if code != 0:
            raise E2EError(f"image build failed with exit code {code}: {' '.join(argv)}")
        staging.rename(target)
        log.write(f"e2e: image built in {time.monotonic() - started:.0f} s\n")
        image = _cached_image(target, key)
        if image is None:
            raise E2EError(f"image build left no root.img/vmlinuz/initrd.img in {target}")
        _prune_old_images(base, key, log)
        return image


def _unmount_below(directory: Path) -> None:
    """Unmount everything mounted at or below directory (deepest first)."""
    prefix = str(directory).rstrip("/")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)


def _prune_old_images(base: Path, key: str, log: Sink) -> None:
    for old in base.glob("image-*"):
        if old.is_dir() and old.name != f"image-{key}":
            log.write(f"e2e: removing stale image {old}\n")
            shutil.rmtree(old, ignore_errors=True)


def _run_streamed(argv: list[str], log: Sink, timeout: float) -> int:
    """Run argv with its output copied line by line to log; kill it after timeout seconds."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: a timeout kills its children too
    )
    assert proc.stdout is not None
    timer = threading.Timer(timeout, _kill_group, args=(proc,))
    timer.start()
    try:
        for raw in proc.stdout:
            log.write(raw.decode(errors="replace"))
            log.flush()
        return proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
        proc.stdout.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _run(argv: list[str], log: Sink, timeout: float = 600.0) -> None:
    code = _run_streamed(argv, log, timeout)
    if code != 0:
        raise E2EError(f"command failed with exit code {code}: {' '.join(argv)}")


def build_payload(work: Path, log: Sink, repo: Path = REPO_ROOT) -> Path:
    """Make the payload disk image: the driver and its dependencies, pytest, the guest suite.

    The driver is built from ``repo`` as a wheel and installed with ``pip install --target``; the
    host and the guest both run CPython 3.11 on glibc 2.36, so the binary wheels pip picks here
    (grpcio, protobuf) load in the guest.
    """
    import pytest  # noqa: PLC0415 - only the version of the host's pytest is needed

    wheels = work / "wheels"
    tree = work / "payload"
    shutil.rmtree(wheels, ignore_errors=True)
    shutil.rmtree(tree, ignore_errors=True)
    wheels.mkdir(parents=True)
    tree.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(repo)], log)
    built = sorted(wheels.glob("csi_hostpath_selinux-*.whl"))
    if not built:
        raise E2EError(f"pip wheel produced no csi_hostpath_selinux wheel in {wheels}")
    _run(
        [
            *pip,
            "install",
            "--no-compile",
            "--only-binary=:all:",
            "--target",
            str(tree / "site"),
            str(built[-1]),
            f"pytest=={pytest.__version__}",
        ],
        log,
    )
    tests = tree / "tests"
    tests.mkdir()
    for path in GUEST_DIR.iterdir():
        if path.is_file() and path.suffix in (".py", ".sh"):
            shutil.copy2(path, tests / path.name)
    install_init(tree, GUEST_DIR / "init.sh")
    guest_args = os.environ.get(GUEST_ARGS_ENV, "").split()
    if guest_args:
        # Whitespace-separated pytest arguments for the guest (a file, -k EXPR, -x ...).
        (tree / "pytest-args").write_text("".join(arg + "\n" for arg in guest_args))
    image = work / "payload.img"
    image.unlink(missing_ok=True)
    _run(["mkfs.ext4", "-q", "-L", "e2e-payload", "-d", str(tree), str(image), "1G"], log)
    return image


def install_init(tree: Path, script: Path) -> None:
    """Put a guest init into a payload tree: script as init.sh (the image's stub execs
    /payload/init.sh) and the shell library it sources, /payload/guest_lib.sh."""
    shutil.copy2(script, tree / "init.sh")
    (tree / "init.sh").chmod(0o755)
    shutil.copy2(GUEST_LIB, tree / "guest_lib.sh")


def make_results_disk(
    path: Path, log: Sink, label: str = "e2e-results", size: str = "256M"
) -> Path:
    """A fresh, empty ext4 disk image for what the guest leaves behind (its vdc)."""
    path.unlink(missing_ok=True)
    _run(["mkfs.ext4", "-q", "-L", label, str(path), size], log)
    return path


def copy_results(disk: Path, dest: Path) -> None:
    """Copy every file of the (unmounted) results disk into dest with debugfs (no mount)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    subprocess.run(
        ["debugfs", "-R", f"rdump / {dest}", str(disk)],
        capture_output=True,
        timeout=120,
        check=False,
    )


#: The guest kernel's command line. The image's init stub (/usr/local/sbin/e2e-init) mounts the
#: payload disk and execs its init.sh; SELinux starts permissive, the payload's init switches it.
KERNEL_APPEND = (
    "console=ttyS0 root=/dev/vda rw init=/usr/local/sbin/e2e-init "
    "security=selinux selinux=1 apparmor=0 enforcing=0 panic=-1 loglevel=4"
)


def create_overlay(image: VMImage, overlay: Path, log: Sink) -> Path:
    """A fresh copy-on-write qcow2 overlay of the cached root image (the cache stays clean)."""
    overlay.unlink(missing_ok=True)
    _run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            str(image.root),
            str(overlay),
        ],
        log,
    )
    return overlay


def qemu_argv(
    image: VMImage,
    *,
    memory_mb: int,
    overlay: Path,
    payload: Path,
    results: Path,
    network: list[str],
) -> list[str]:
    """The QEMU command that boots the image (TCG, 2 CPUs, serial console on stdout, -no-reboot)
    with its three virtio disks, vda the root overlay, vdb the read-only payload, vdc the results
    disk (the guest inits rely on these names), and the given network arguments.

    The disks use QEMU's default cache mode, cache=writeback: QEMU writes what the guest writes to
    the host file with plain pwrite (no O_DIRECT), so it is in the host's page cache as soon as
    the guest's request completes, and it fdatasyncs the file when the guest flushes (virtio-blk
    announces a volatile write cache, so the guest's kernel sends a flush for fsync and for every
    journal commit). The qcow2 overlay's own metadata (L2 tables, refcounts), held in QEMU's
    memory for new clusters, is written at such a flush too, in an order that keeps the image
    consistent. The host's page cache outlives QEMU, so a SIGKILL of QEMU (the cluster node's
    power_cut) loses exactly what a power cut loses on a disk with a write cache: the guest's page
    cache, and writes the guest did not flush (which may or may not have reached the file);
    everything the guest flushed is kept. cache=unsafe would ignore the guest's flushes and is not
    used.
    """
    return [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        str(memory_mb),
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        KERNEL_APPEND,
        "-drive",
        f"file={overlay},format=qcow2,if=virtio",
        "-drive",
        f"file={payload},format=raw,if=virtio,readonly=on",
        "-drive",
        f"file={results},format=raw,if=virtio",
        *network,
    ]


def follow_console(
    stream: IO[bytes], lines: list[str], sinks: Sequence[Sink], on_line: Callable[[str], None]
) -> None:
    """Read a VM's serial console until QEMU closes it: each line, without its CRs, is appended
    to lines, written and flushed to every sink, then handed to on_line."""
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\r\n").replace("\r", "")
        lines.append(line)
        for sink in sinks:
            sink.write(line + "\n")
            sink.flush()
        on_line(line)


def boot(
    image: VMImage,
    payload: Path,
    work: Path,
    echo: Sink | None = None,
    timeout: float | None = None,
) -> BootResult:
    """Boot the VM once, stream its console to work/console.log (and echo), return the result.

    QEMU is killed when the guest has not powered off within timeout seconds, and in any case
    before this function returns.
    """
    if timeout is None:
        timeout = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_BOOT_TIMEOUT)
    with (work / "harness.log").open("a") as hlog:
        overlay = create_overlay(image, work / "root-overlay.qcow2", hlog)
        results = make_results_disk(work / "results.img", hlog)
    argv = qemu_argv(
        image,
        memory_mb=2048,
        overlay=overlay,
        payload=payload,
        results=results,
        network=["-nic", "none"],
    )
    result = BootResult(console_log=work / "console.log")
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    timer = threading.Timer(timeout, _expire, args=(proc, result))
    timer.start()
    try:
        assert proc.stdout is not None
        with result.console_log.open("w") as console:
            follow_console(
                proc.stdout,
                result.console,
                [console] if echo is None else [console, echo],
                lambda line: _parse_marker(line, result),
            )
        proc.wait(timeout=30)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        result.seconds = time.monotonic() - started
    copy_results(results, work / "results")
    junit = work / "results" / "junit.xml"
    if junit.is_file():
        result.junit_xml = junit.read_text(errors="replace")
    return result


def _expire(proc: subprocess.Popen[bytes], result: BootResult) -> None:
    result.timed_out = True
    proc.kill()


def _parse_marker(line: str, result: BootResult) -> None:
    found = RESULT_RE.search(line)
    if found:
        result.exit_code = int(found.group(1))
        return
    found = ENFORCE_RE.search(line)
    if found:
        result.enforce = found.group(1)
        result.enforce_reason = found.group(2)


def summary(result: BootResult) -> str:
    """A few lines for the host's log: mode, exit code, time, where the logs are."""
    mode = result.enforce or "unknown (no E2E-ENFORCE line)"
    if result.enforce_reason:
        mode += f" ({result.enforce_reason})"
    return (
        f"e2e: SELinux mode in the guest: {mode}\n"
        f"e2e: guest pytest exit code: {result.exit_code}"
        f"{' (timed out)' if result.timed_out else ''}, boot+suite {result.seconds:.0f} s\n"
        f"e2e: console log: {result.console_log}; guest files (junit.xml, driver logs): "
        f"{result.console_log.parent / 'results'}"
    )


def run(work: Path, echo: Sink | None = None, repo: Path | None = None) -> BootResult:
    """Build or reuse the image, make the payload, boot once; the full e2e run.

    The driver is built from repo, else from $CSI_E2E_REPO, else from this checkout.
    """
    if repo is None:
        repo = Path(os.environ.get(REPO_ENV) or REPO_ROOT)
    work.mkdir(parents=True, exist_ok=True)
    sink = echo if echo is not None else sys.stderr
    started = time.monotonic()
    with (work / "harness.log").open("a") as hlog:
        tee = _Tee(hlog, sink)
        image = ensure_image(tee)
        t_image = time.monotonic()
        payload = build_payload(work, tee, repo)
        t_payload = time.monotonic()
        tee.write(
            f"e2e: image ready in {t_image - started:.0f} s, "
            f"payload in {t_payload - t_image:.0f} s; booting\n"
        )
    result = boot(image, payload, work, echo)
    sink.write(
        f"e2e: boot and guest suite took {result.seconds:.0f} s, "
        f"whole run {time.monotonic() - started:.0f} s\n"
    )
    return result


class _Tee:
    """A minimal text sink writing to two streams (enough for the harness logs)."""

    def __init__(self, first: Sink, second: Sink) -> None:
        self._streams = (first, second)

    def write(self, text: str) -> int:
        for stream in self._streams:
            stream.write(text)
            stream.flush()
        return len(text)

    def flush(self) -> None:
        for stream in self._streams:
            stream.flush()
