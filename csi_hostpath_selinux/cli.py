"""Command line: `csi-hostpath-selinux [flags]` serves CSI; `csi-hostpath-selinux doctor` checks the node."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import DEFAULT_DRIVER_NAME, DEFAULT_ENDPOINT, DEFAULT_STATE_DIR, GIB, DriverConfig
from .doctor import DEFAULT_EXPECTED, FEATURES, parse_expected
from .units import parse_size


def size(text: str) -> int:
    """argparse type for byte counts like 1073741824, 10Gi or 500M."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="csi-hostpath-selinux",
        description="CSI driver for node-local volumes (loop-mounted images, raw block, "
        "directories) that honours kubelet's SELinux context= mount option. Without a "
        "subcommand it serves the CSI Identity, Controller and Node services.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help="where to serve CSI: unix:///path/to/socket, or tcp://host:port for "
        "debugging (default: %(default)s)",
    )
    p.add_argument(
        "--nodeid",
        default=socket.gethostname(),
        help="this node's id, reported by NodeGetInfo and used as its topology "
        "segment (default: the host name, %(default)s)",
    )
    p.add_argument(
        "--drivername",
        default=DEFAULT_DRIVER_NAME,
        help="the CSI driver name; must match the CSIDriver object (default: %(default)s)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where volume images, directories, snapshots and the catalog live "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--kubelet-dir",
        default=None,
        help="kubelet's root directory, e.g. /var/lib/kubelet: staging and target paths "
        "outside it are refused (default: any absolute path is accepted)",
    )
    p.add_argument(
        "--max-volumes-per-node",
        type=int,
        default=1000,
        help="the most volumes this node holds and reports in NodeGetInfo (default: %(default)s)",
    )
    p.add_argument(
        "--max-volume-size",
        type=size,
        default=1024 * GIB,
        help="largest volume CreateVolume accepts (default: 1Ti)",
    )
    p.add_argument(
        "--default-volume-size",
        type=size,
        default=GIB,
        help="size of a volume whose request names none (default: 1Gi)",
    )
    p.add_argument(
        "--capacity",
        type=size,
        default=0,
        help="total capacity this node provisions: CreateVolume refuses a volume that would "
        "take the volumes' sizes together beyond it (RESOURCE_EXHAUSTED), and GetCapacity "
        "reports what is left, never more than the state directory's free space; 0 means the "
        "free space alone (default: 0)",
    )
    p.add_argument(
        "--preallocate",
        action="store_true",
        help="allocate every image volume's full size on disk when it is created (and grown), "
        "so the state directory can never be overcommitted and a pod never gets an I/O error "
        "because the node's disk is full; without it images are sparse and the volumes' sizes "
        "together may exceed the free space (default: off)",
    )
    p.add_argument(
        "--workers", type=int, default=16, help="gRPC worker threads (default: %(default)s)"
    )
    p.add_argument(
        "--grace-period",
        type=float,
        default=20.0,
        help="seconds in-flight calls get to finish on SIGTERM (default: %(default)s)",
    )
    p.add_argument(
        "--metrics-address",
        default="",
        help="host:port to serve Prometheus metrics on /metrics (default: off)",
    )
    p.add_argument(
        "-v",
        "--log-level",
        type=int,
        default=2,
        metavar="N",
        help="verbosity in klog's style: 0-1 warnings, 2-4 info, 5+ debug with "
        "requests (secrets redacted) (default: %(default)s)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    doctor_help = (
        "report what SELinux and mount support this node gives the driver, and what will "
        "therefore work; exits 1 when something the node is expected to serve cannot work (a "
        "tool or loop devices a feature named in --expect needs, or SELinux on the host that the "
        "driver cannot see), 0 otherwise"
    )
    doctor = sub.add_parser("doctor", help=doctor_help, description=doctor_help)
    doctor.add_argument(
        "--expect",
        type=expected_features,
        default=DEFAULT_EXPECTED,
        metavar="FEATURES",
        help="comma-separated features this node must serve, from "
        f"{', '.join(FEATURES)}: the kinds and fsTypes of the StorageClasses in use; a tool "
        "only another feature needs is reported, not counted (default: "
        f"{','.join(DEFAULT_EXPECTED)})",
    )
    state_help = (
        "print, as JSON, the volumes of the state directory and the stagings and publications "
        "the driver has recorded on this node (label, mount flags, device), read-only: safe "
        "beside a running driver, changes nothing"
    )
    sub.add_parser("state", help=state_help, description=state_help)
    return p


def expected_features(text: str) -> tuple[str, ...]:
    """argparse type for doctor --expect."""
    try:
        return parse_expected(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure_logging(level: int) -> None:
    py_level = logging.DEBUG if level >= 5 else logging.INFO if level >= 2 else logging.WARNING
    # The format below prints none of what these collect for every record: the caller's file,
    # line and function (a walk up the stack), the thread, the process id (a system call) and
    # the multiprocessing process. The logging HOWTO's "Optimization" section names these
    # switches. Measured here: 39 us per INFO record before, 28 us after.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(
        level=py_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def config_from(args: argparse.Namespace) -> DriverConfig:
    return DriverConfig(
        node_id=args.nodeid,
        state_dir=args.state_dir,
        driver_name=args.drivername,
        endpoint=args.endpoint,
        kubelet_dir=args.kubelet_dir.rstrip("/") if args.kubelet_dir else None,
        max_volumes_per_node=args.max_volumes_per_node,
        max_volume_bytes=args.max_volume_size,
        default_volume_bytes=args.default_volume_size,
        max_capacity_bytes=args.capacity,
        preallocate=args.preallocate,
        workers=args.workers,
        grace_seconds=args.grace_period,
        metrics_address=args.metrics_address,
    )


def serve(config: DriverConfig) -> int:
    from . import grpc_core

    grpc_core.configure()  # before the imports below bring in grpc
    from .catalog_guard import StateDirError
    from .doctor import startup_report
    from .server import EndpointError, build
    from .state import CatalogError
    from .stop_signal import stop_signals, wait_for_stop

    startup_report(logging.getLogger("csi_hostpath_selinux.preflight"))
    try:
        driver = build(config)  # a stop signal meanwhile ends the process (the default action)
    except EndpointError as exc:
        logging.getLogger(__name__).error("%s", exc)
        return 2
    except (StateDirError, CatalogError) as exc:
        logging.getLogger(__name__).error("%s", exc)
        return 3
    with stop_signals() as stop_pipe:
        signum = wait_for_stop(stop_pipe)
        logging.getLogger(__name__).info(
            "signal received: stopping (%s, grace %.0fs)", signum.name, config.grace_seconds
        )
        driver.stop()  # a second signal meanwhile is caught and ignored: the stop goes on
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.command == "doctor":
        from .doctor import doctor

        return doctor(sys.stdout, args.expect)
    if args.command == "state":
        from .state_report import state

        return state(sys.stdout, sys.stderr, args.state_dir)
    return serve(config_from(args))


if __name__ == "__main__":
    sys.exit(main())
