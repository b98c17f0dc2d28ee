"""Node preflight: what SELinux and mount support the driver has here, in plain words.

What counts as missing (doctor's exit status 1): something that keeps an expected feature from
working. By default every feature the driver serves is expected: the driver offers every kind and
fsType to any StorageClass, so a node that cannot stage one of them fails that StorageClass's pods.
An operator whose StorageClasses use fewer names those with `doctor --expect`; a tool only an
unexpected feature needs is then reported, not counted. A host with SELinux that the driver cannot
see (selinuxfs hidden or read-only, /etc/selinux/config missing) always counts: labelled NFS and
CIFS mounts would be refused there.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from .selinux import SELinuxSupport, probe_support


@dataclass(frozen=True)
class Feature:
    title: str
    tools: tuple[str, ...]
    needs_loop: bool


#: What each feature needs, by the name `doctor --expect` takes (a StorageClass's kind or fsType).
FEATURES: dict[str, Feature] = {
    "ext4": Feature("ext4 image volumes", ("mkfs.ext4",), True),
    "xfs": Feature("xfs image volumes", ("mkfs.xfs",), True),
    "block": Feature("raw block volumes", (), True),
    "directory": Feature("directory volumes", (), False),
    "nfs": Feature("NFS volumes", ("mount", "mount.nfs"), False),
    "cifs": Feature("CIFS volumes", ("mount", "mount.cifs"), False),
}
#: What a node must serve unless told otherwise: everything the driver offers.
DEFAULT_EXPECTED = tuple(FEATURES)
LOOP_CONTROL = "/dev/loop-control"


def parse_expected(text: str) -> tuple[str, ...]:
    """`--expect ext4,nfs`: names from FEATURES, comma-separated; ValueError names a bad one."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(
            f"unknown feature {unknown[0]!r}; choose from {', '.join(FEATURES)} (comma-separated)"
        )
    return names


@dataclass(frozen=True)
class NodeReport:
    selinux: SELinuxSupport
    missing_tools: dict[str, list[str]]
    loop_control: bool
    expected: tuple[str, ...] = DEFAULT_EXPECTED

    def lines(self) -> list[str]:
        out = ["SELinux:"]
        out += [f"  {line}" for line in self.selinux.describe()]
        out.append("Volume kinds:")
        out.append(
            "  loop devices: "
            + (
                "available (/dev/loop-control)"
                if self.loop_control
                else "MISSING: /dev/loop-control is not visible, image volumes cannot be staged"
            )
        )
        for name, feature in FEATURES.items():
            missing = list(self.missing_tools.get(name, []))
            if feature.needs_loop and not self.loop_control:
                missing.append("/dev/loop-control")
            state = "ready" if not missing else f"unavailable, missing {', '.join(missing)}"
            mark = " (expected)" if name in self.expected else ""
            out.append(f"  {feature.title} [{name}]{mark}: {state}")
        out.append("What works:")
        if not self.selinux.kernel_enabled:
            out.append(
                "  SELinux is off: volumes are mounted without labels, and a request with "
                "a context= option is refused (kubelet sends none on such a node)"
            )
        else:
            out.append(
                "  image volumes: labelled by mount(2) with context=, verified after every mount"
            )
            out.append(
                "  directory volumes: cannot carry a mount label; labelled requests are refused"
            )
            out.append(
                "  NFS and CIFS volumes: "
                + (
                    "labelled through their mount helpers"
                    if self.selinux.util_linux_keeps_options
                    else "labelled requests REFUSED: util-linux would drop the context option"
                )
            )
        return out

    @property
    def problems(self) -> list[str]:
        found = list(self.selinux.problems())
        for name in self.expected:
            feature = FEATURES[name]
            missing = list(self.missing_tools.get(name, []))
            if feature.needs_loop and not self.loop_control:
                missing.append("/dev/loop-control (mount the host's /dev into the container)")
            if missing:
                found.append(
                    f"{feature.title} are expected (--expect {name}) but need {', '.join(missing)}"
                )
        return found


def inspect(
    expected: Sequence[str] = DEFAULT_EXPECTED,
    probe: Callable[[], SELinuxSupport] | None = None,
    loop_control: str | None = None,
) -> NodeReport:
    """Look at this node: tools on PATH, loop-control, SELinux (probe_support by default)."""
    missing = {
        name: [t for t in feature.tools if shutil.which(t) is None]
        for name, feature in FEATURES.items()
    }
    support = (probe or probe_support)()
    loop = os.path.exists(loop_control or LOOP_CONTROL)
    return NodeReport(support, missing, loop, tuple(expected))


def doctor(out: TextIO, expected: Sequence[str] = DEFAULT_EXPECTED) -> int:
    """Print the report; 1 when something expected cannot work (see the module), else 0."""
    report = inspect(expected)
    for line in report.lines():
        print(line, file=out)
    if report.problems:
        print("Problems:", file=out)
        for problem in report.problems:
            print(f"  {problem}", file=out)
        return 1
    return 0


def startup_report(log: logging.Logger) -> None:
    report = inspect()
    for line in report.lines():
        log.info("%s", line)
    for problem in report.problems:
        log.warning("PREFLIGHT PROBLEM: %s", problem)
