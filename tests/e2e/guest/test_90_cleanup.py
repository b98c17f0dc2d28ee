"""After every volume was unpublished, unstaged and deleted: nothing is left behind.

This file runs last (pytest collects files in name order).
"""

from __future__ import annotations

import time
from pathlib import Path

from e2e_lib import CIFS_SECRETS, KUBELET_DIR, attached_loop_devices, mounts_below


def test_no_mounts_under_kubelet_dir() -> None:
    left = mounts_below(KUBELET_DIR)
    for entry in left:
        print(f"left mounted: {entry.line}")
    print(f"mounts under {KUBELET_DIR}: {len(left)}")
    assert not left


def test_no_loop_devices_attached() -> None:
    left = attached_loop_devices()
    print(f"attached loop devices: {left or 'none'}")
    assert not left


def volume_files() -> list[str]:
    left = []
    for state_dir in Path("/var/lib").glob("csi-hostpath-selinux*"):
        volumes = sorted(str(p) for p in state_dir.rglob("vol-*"))
        print(f"volume files in {state_dir}: {volumes or 'none'}")
        left += volumes
    return left


def test_state_dirs_hold_no_volumes() -> None:
    # A delete's intent file (intents/vol-...) goes once the catalog's commit is on disk, up to
    # 0.25 s after DeleteVolume answered (catalog_sync.WalSync.DELAY): wait for that, bounded.
    deadline = time.monotonic() + 10
    left = volume_files()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = volume_files()
    assert not left


def test_driver_logs_hold_no_secret() -> None:
    """The CIFS password went through CreateVolume and NodeStageVolume at -v 5."""
    logs = sorted(Path("/results").glob("driver*.log"))
    print(f"driver logs: {[str(p) for p in logs]}")
    assert logs, "no driver log was written"
    leaked = [str(p) for p in logs if CIFS_SECRETS["password"] in p.read_text(errors="replace")]
    print(f"logs containing the CIFS password: {leaked or 'none'}")
    assert not leaked
