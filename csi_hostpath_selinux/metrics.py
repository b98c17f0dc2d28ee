"""Prometheus metrics: SELinux mount outcomes and RPC latency, served in the text format.

Kept dependency-free: a handful of counters and a latency histogram behind a lock, exposed by a
small HTTP server when --metrics-address is set.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

#: Histogram buckets for RPC latency, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

PREFIX = "csi_hostpath_selinux"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, int] = defaultdict(int)
        self._rpc_buckets: dict[tuple[str, str], list[int]] = {}
        self._rpc_sum: dict[tuple[str, str], float] = defaultdict(float)
        self._rpc_count: dict[tuple[str, str], int] = defaultdict(int)

    def labelled_mount(self) -> None:
        self._inc("selinux_labelled_mounts_total")

    def label_conflict(self) -> None:
        self._inc("selinux_label_conflicts_total")

    def verification_failure(self) -> None:
        self._inc("selinux_label_verification_failures_total")

    def _inc(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    def counter(self, name: str) -> int:
        with self._lock:
            return self._counters[name]

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        with self._lock:
            buckets = self._rpc_buckets.setdefault(key, [0] * len(BUCKETS))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self._rpc_sum[key] += seconds
            self._rpc_count[key] += 1

    def render(self) -> str:
        """The metrics in Prometheus' text exposition format."""
        lines: list[str] = []
        with self._lock:
            for name in (
                "selinux_labelled_mounts_total",
                "selinux_label_conflicts_total",
                "selinux_label_verification_failures_total",
            ):
                lines.append(f"# TYPE {PREFIX}_{name} counter")
                lines.append(f"{PREFIX}_{name} {self._counters[name]}")
            hist = f"{PREFIX}_rpc_duration_seconds"
            lines.append(f"# TYPE {hist} histogram")
            for (method, code), buckets in sorted(self._rpc_buckets.items()):
                labels = f'method="{method}",code="{code}"'
                for bound, count in zip(BUCKETS, buckets, strict=True):
                    lines.append(f'{hist}_bucket{{{labels},le="{bound}"}} {count}')
                lines.append(
                    f'{hist}_bucket{{{labels},le="+Inf"}} {self._rpc_count[(method, code)]}'
                )
                lines.append(f"{hist}_sum{{{labels}}} {self._rpc_sum[(method, code)]:.6f}")
                lines.append(f"{hist}_count{{{labels}}} {self._rpc_count[(method, code)]}")
        return "\n".join(lines) + "\n"


def serve(metrics: Metrics, address: str) -> ThreadingHTTPServer:
    """Serve /metrics on address ("host:port") in a daemon thread; return the server."""
    # Imported here: http.server and what it brings cost the driver's memory when metrics are
    # off (the default).
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

    host, _, port = address.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes are not worth a log line each

    server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), Handler)  # noqa: S104
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
