"""Where a pinned Go module's files are: `go mod download -json` fetches it into the module cache
(or finds it there) and names its directory. The cluster harness takes the snapshot CRDs and
snapshot-controller manifests from there, the deploy tests the CRDs' schemas."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path


class GoModuleError(RuntimeError):
    """The module could not be had; reason is what go said."""

    def __init__(self, module: str, reason: str) -> None:
        super().__init__(f"go mod download {module}: {reason}")
        self.module = module
        self.reason = reason


def go_module_dir(module: str, go: str = "go") -> Path:
    """The directory of module (path@version) in the Go module cache, downloaded when missing."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [go, "mod", "download", "-json", module],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
            timeout=300,
        )
    info = json.loads(proc.stdout or "{}")
    if proc.returncode != 0 or info.get("Error") or not info.get("Dir"):
        raise GoModuleError(module, info.get("Error") or proc.stderr.strip())
    return Path(info["Dir"])
