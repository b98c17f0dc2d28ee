"""The label step of a pod start, read from the logs of the two components that do it.

MountOption: the driver labels the volume by mounting it with `context=`; its NodeStageVolume and
NodePublishVolume are the whole label step (the driver logs each RPC's duration at -v=5).
Recursive: containerd relabels every file of the volume inside CRI CreateContainer, before the
container exists; CreateContainer's span in containerd's log (from "CreateContainer within sandbox
… for container" to "… returns container id") is that step plus creating the container, whose
cost alone is the same span under MountOption.

Pure text parsing: benchmarks/podstart.py collects the logs, tests/unit/test_podstart_logs.py
checks the parsing on lines in the components' real formats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_RPC_DONE = re.compile(r"\b(NodeStageVolume|NodePublishVolume) finished (\w+) in ([0-9.]+) ms")
_TIME = re.compile(r'^time="([^"]+)"')


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateContainerSpan:
    """containerd's CreateContainer for one pod's container: first call to first success."""

    seconds: float
    #: CreateContainer calls kubelet made before one succeeded (kubelet gives up on a call after
    #: its runtime request timeout, 2 min by default, and calls again while containerd still
    #: works on the first one).
    calls: int


def driver_rpc_ms(driver_log: str) -> dict[str, float]:
    """Total milliseconds per successful NodeStageVolume / NodePublishVolume in `driver_log`
    (the part of the driver's log written while one pod started)."""
    totals: dict[str, float] = {}
    for method, code, ms in _RPC_DONE.findall(driver_log):
        if code == "OK":
            totals[method] = totals.get(method, 0.0) + float(ms)
    return totals


def _stamp(line: str) -> float:
    match = _TIME.match(line)
    if match is None:
        raise ValueError(f"a containerd log line without time=: {line[:120]!r}")
    text = match.group(1)
    # containerd prints nanoseconds; datetime takes microseconds.
    head, _, frac = text.rstrip("Z").partition(".")
    micro = (frac + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{micro}+00:00").timestamp()


def _sandbox_of(containerd_log: str, pod: str, uid: str) -> str:
    needle = f"PodSandboxMetadata{{Name:{pod},Uid:{uid},"
    for line in containerd_log.splitlines():
        if "RunPodSandbox for" in line and needle in line and "returns sandbox id" in line:
            found = re.search(r'returns sandbox id \\"([0-9a-f]+)\\"', line)
            if found:
                return found.group(1)
    raise LookupError(f"containerd's log has no sandbox for pod {pod} ({uid})")


def create_container_attempts(
    containerd_log: str, pod: str, uid: str, container: str
) -> list[tuple[int, float | None]]:
    """Per container attempt (kubelet's restart count) of `container` in pod `pod`: seconds from
    containerd's first CreateContainer call for that attempt to its "returns container id", None
    when that attempt never returned. Under Recursive, one attempt is one relabel of the volume."""
    sandbox = _sandbox_of(containerd_log, pod, uid)
    prefix = f'CreateContainer within sandbox \\"{sandbox}\\" for'
    first: dict[int, float] = {}
    done: dict[int, float] = {}
    for line in containerd_log.splitlines():
        if prefix not in line:
            continue
        found = re.search(rf"ContainerMetadata{{Name:{re.escape(container)},Attempt:(\d+),", line)
        if found is None:
            continue
        attempt = int(found.group(1))
        if "returns container id" in line:
            done.setdefault(attempt, _stamp(line))
        elif " for container &" in line:
            first.setdefault(attempt, _stamp(line))
    return [
        (attempt, done[attempt] - start if attempt in done else None)
        for attempt, start in sorted(first.items())
    ]


def create_container_span(
    containerd_log: str, pod: str, uid: str, container: str
) -> CreateContainerSpan:
    """The CreateContainer span of `container` in the sandbox containerd made for pod `pod`
    (UID `uid`)."""
    sandbox = _sandbox_of(containerd_log, pod, uid)
    start: float | None = None
    calls = 0
    prefix = f'CreateContainer within sandbox \\"{sandbox}\\" for'
    for line in containerd_log.splitlines():
        if prefix not in line or f"Name:{container}," not in line:
            continue
        if "returns container id" in line:
            if start is None:
                raise LookupError(f"containerd returned a container for {pod} it was not asked for")
            return CreateContainerSpan(seconds=_stamp(line) - start, calls=calls)
        if f"for container &ContainerMetadata{{Name:{container}," in line:
            calls += 1
            if start is None:
                start = _stamp(line)
    raise LookupError(f"containerd's log has no finished CreateContainer of {container} in {pod}")
