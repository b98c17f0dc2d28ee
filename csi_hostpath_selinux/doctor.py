"""Node preflight: what SELinux and mount support the driver has here, in plain words."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from typing import TextIO

from .selinux import SELinuxSupport, probe_support

#: Tools each feature needs, by what a user would call the feature.
TOOLS = {
    "ext4 image volumes": ("mkfs.ext4",),
    "xfs image volumes": ("mkfs.xfs",),
    "NFS volumes": ("mount", "mount.nfs"),
    "CIFS volumes": ("mount", "mount.cifs"),
}


@dataclass(frozen=True)
class NodeReport:
    selinux: SELinuxSupport
    missing_tools: dict[str, list[str]]
    loop_control: bool

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
        for feature, missing in self.missing_tools.items():
            state = "ready" if not missing else f"unavailable, missing {', '.join(missing)}"
            out.append(f"  {feature}: {state}")
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
        if not self.loop_control:
            found.append("/dev/loop-control is missing")
        return found


def inspect() -> NodeReport:
    missing = {
        feature: [t for t in tools if shutil.which(t) is None] for feature, tools in TOOLS.items()
    }
    return NodeReport(probe_support(), missing, os.path.exists("/dev/loop-control"))


def doctor(out: TextIO) -> int:
    report = inspect()
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
