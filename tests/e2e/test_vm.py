"""Boot the SELinux VM and run the guest suite in it (see README.md in this directory)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from . import vm


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the e2e VM build needs root (debootstrap, chroot, mkfs -d with owners)"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control on this host"
    return None


@pytest.mark.e2e
def test_guest_suite_in_selinux_vm(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    capturing = request.config.getoption("capture") != "no"
    echo = None if capturing else sys.stdout
    result = vm.run(tmp_path, echo=echo)
    print(vm.summary(result))
    assert not result.timed_out, (
        f"the VM did not power off in time; console log: {result.console_log}\n"
        + "\n".join(result.console[-40:])
    )
    assert result.exit_code is not None, (
        f"the guest printed no E2E-RESULT line; console log: {result.console_log}\n"
        + "\n".join(result.console[-60:])
    )
    assert result.enforce == "Enforcing", (
        f"the guest ran {result.enforce} instead of enforcing: {result.enforce_reason}"
    )
    assert result.exit_code == 0, (
        f"guest suite exit code {result.exit_code}; console log: {result.console_log}\n"
        + "\n\n".join(result.failures())
    )
