"""Helpers the kinds share: running a tool, copying a sparse file, asking for a capability.

Private to the backends package: a kind's module imports from here, never from another kind's
module, so each kind stays one file a vendor can read (and copy) on its own.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import FailedPrecondition, Internal


def copy_sparse(source: Path, dest: Path) -> None:
    """Copy an image keeping holes (and sharing extents where the filesystem can reflink)."""
    cp = shutil.which("cp") or "/bin/cp"
    run_tool(
        [cp, "--sparse=always", "--reflink=auto", "--no-dereference", str(source), str(dest)],
        "copying the volume image",
    )


def run_tool(argv: list[str], what: str, ok_codes: tuple[int, ...] = (0,)) -> None:
    """Run a helper tool from an argv list; raise Internal with its stderr when it exits with
    a code outside ok_codes."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=600, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as exc:
        raise FailedPrecondition(
            f"{what} needs {argv[0]!r}, which is not installed in the driver's image"
        ) from exc
    if proc.returncode not in ok_codes:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise Internal(
            f"{what} failed: {argv[0]} exited {proc.returncode}: {' '.join(detail[-3:])}"
        )


CAP_SYS_RESOURCE = 24


def has_sys_resource() -> bool:
    """True when this process holds CAP_SYS_RESOURCE (ext4's online resize demands it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except OSError:
        pass
    return False
