"""The memory floor of the stack our driver is built on, to judge the driver's idle RSS by.

Two processes, run with the same interpreter and package path as our driver:

- `imports`: CPython with grpcio and the CSI message and service descriptors imported, nothing
  else: what any Python CSI driver on grpcio carries before it does anything;
- `server`: the same, plus a grpcio server with a thread pool listening on a unix socket and the
  CSI Identity service registered (answering nothing useful): what serving CSI costs at least.

Our driver's idle RSS minus the `server` floor is what the driver itself adds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .drivers import rss_mib

_IMPORTS = """
import grpc
from csi_hostpath_selinux._proto import csi_pb2, csi_pb2_grpc
"""

_SERVER = """
from concurrent import futures
server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
csi_pb2_grpc.add_IdentityServicer_to_server(csi_pb2_grpc.IdentityServicer(), server)
server.add_insecure_port("unix:" + sys.argv[1])
server.start()
"""

_WAIT = """
import sys
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.read()
"""


def _measure(code: str, work: Path, source: Path | None, settle: float) -> float:
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(source)) if source is not None else None
    argv = [sys.executable, "-c", "import sys\n" + code + _WAIT, str(work / "floor.sock")]
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=source
    ) as proc:
        try:
            if proc.stdout is None or proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("the floor process did not start")
            time.sleep(settle)
            return rss_mib(proc.pid)
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(30)


def stack_floor(work: Path, source: Path | None = None, settle: float = 2.0) -> dict[str, float]:
    """Idle VmRSS (MiB) of the bare stack: imports alone, and with a gRPC server serving."""
    return {
        "imports": _measure(_IMPORTS, work / "imports", source, settle),
        "server": _measure(_IMPORTS + _SERVER, work / "server", source, settle),
    }
