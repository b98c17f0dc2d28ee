"""Settings of gRPC's C core that it reads once, when grpc is first imported.

grpcio 1.85 serves through its EventEngine listener and endpoints by default: every read and
write of a call hops through the EventEngine's own threads before reaching the Python thread
polling the completion queue. With those two experiments off, the core's older I/O path reads
and writes in the thread that polls, and each call wakes fewer threads: measured on this
project's benchmark (GetPluginInfo, the gRPC stack alone), per-call latency drops by about a
tenth at 1 client and by a third at 8 (docs/benchmarks.md). GRPC_EXPERIMENTS is grpc-core's
documented switch for this; an operator who sets it keeps their own value.
"""

from __future__ import annotations

import os
import sys

#: Turned off by default; `GRPC_EXPERIMENTS=` (empty) restores grpc's own defaults.
EXPERIMENTS = "-event_engine_listener,-event_engine_for_all_other_endpoints"


def configure() -> bool:
    """Set the defaults above; False when grpc was imported already (then they cannot apply)."""
    if "grpc" in sys.modules:
        return False
    os.environ.setdefault("GRPC_EXPERIMENTS", EXPERIMENTS)
    return True
