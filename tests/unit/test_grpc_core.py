"""grpc-core settings are made before grpc is imported, and an operator's own value wins."""

from __future__ import annotations

import os
import subprocess
import sys

from csi_hostpath_selinux import grpc_core

PROBE = (
    "import os\n"
    "from csi_hostpath_selinux import grpc_core\n"
    "print(grpc_core.configure(), os.environ.get('GRPC_EXPERIMENTS'))\n"
)


def run(env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True
    )
    return proc.stdout.strip()


def test_the_driver_turns_the_event_engine_experiments_off_by_default() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    assert run(env) == f"True {grpc_core.EXPERIMENTS}"


def test_an_operators_setting_is_kept() -> None:
    assert run(dict(os.environ, GRPC_EXPERIMENTS="")) == "True"
    assert run(dict(os.environ, GRPC_EXPERIMENTS="-foo")) == "True -foo"


def test_too_late_once_grpc_is_imported() -> None:
    import grpc  # noqa: F401, PLC0415 - the point of the test

    assert grpc_core.configure() is False
