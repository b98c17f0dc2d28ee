"""The memory floor of the stack our driver is built on, to judge the driver's idle RSS by.

Two processes, run with the same interpreter and package path as our driver:

- `imports`: CPython with grpcio and the CSI message and service descriptors imported, nothing
  else: what any Python CSI driver on grpcio carries before it does anything;
- `server`: the same, plus a grpcio server with a thread pool (16 workers, as ours) listening on
  a unix socket with the CSI Identity service registered, answering Probe and GetPluginInfo with
  constants and no interceptor: what serving CSI costs at least. Like our driver, it has answered
  one Probe (the harness's readiness check) when its idle RSS is read: serving a first call
  touches grpcio code and allocates buffers that a server that never served does not have (about
  1 MiB), and the driver's idle figure includes them.

Our driver's idle RSS minus the `server` floor is what the driver itself adds. The same `server`
process is the latency floor of the empty RPC workload (`floor_server`): GetPluginInfo on grpcio
alone, to tell the cost of grpcio's Python server from the cost of our driver's code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc

from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux._proto import csi_pb2_grpc as rpc

from .drivers import ServedDriver, rss_mib

_IMPORTS = """
import grpc
from csi_hostpath_selinux._proto import csi_pb2, csi_pb2_grpc
"""

_SERVER = """
from concurrent import futures


class Identity(csi_pb2_grpc.IdentityServicer):
    def GetPluginInfo(self, request, context):
        return csi_pb2.GetPluginInfoResponse(name="floor.example.com", vendor_version="0")

    def Probe(self, request, context):
        return csi_pb2.ProbeResponse()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
csi_pb2_grpc.add_IdentityServicer_to_server(Identity(), server)
server.add_insecure_port("unix:" + sys.argv[1])
server.start()
"""

_WAIT = """
import sys
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.read()
"""

FLOOR = "grpcio floor"


def _env(source: Path | None) -> dict[str, str] | None:
    return dict(os.environ, PYTHONPATH=str(source)) if source is not None else None


def floor_server(root: Path, source: Path | None = None) -> ServedDriver:
    """The `server` floor as a driver the workloads can call (it answers Identity only)."""
    root.mkdir(parents=True, exist_ok=True)
    code = "import sys\n" + _IMPORTS + _SERVER + "server.wait_for_termination()\n"
    argv = [sys.executable, "-c", code, str(root / "csi.sock")]
    return ServedDriver(FLOOR, root, argv, _env(source), source)


def _measure(
    code: str, work: Path, source: Path | None, settle: float, probe: bool = False
) -> float:
    work.mkdir(parents=True, exist_ok=True)
    sock = work / "floor.sock"
    argv = [sys.executable, "-c", "import sys\n" + code + _WAIT, str(sock)]
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_env(source), cwd=source
    ) as proc:
        try:
            if proc.stdout is None or proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("the floor process did not start")
            if probe:  # as ServedDriver.start probes every driver before its idle figure
                with grpc.insecure_channel(f"unix:{sock}") as channel:
                    rpc.IdentityStub(channel).Probe(pb.ProbeRequest(), timeout=10)
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
        "server": _measure(_IMPORTS + _SERVER, work / "server", source, settle, probe=True),
    }
