"""The test stand-ins for node-driver-registrar and livenessprobe speak the real protocols.

Runs their Go tests (standins_test.go), which build both commands and drive them as processes:
the registrar as kubelet's plugin watcher does (GetInfo, NotifyRegistrationStatus on the
registration socket), the livenessprobe as kubelet's HTTP prober does, against a CSI Identity
server on a Unix socket.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_standins_go_tests() -> None:
    go = shutil.which("go")
    assert go is not None, "the Go toolchain is installed by scripts/install.d"
    proc = subprocess.run(
        [go, "test", "-count=1", "./..."],
        cwd=HERE,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
