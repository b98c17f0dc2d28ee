"""The crash harness at CI size: 15 SIGKILLs under a concurrent workload, and nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.conftest import require_root
from tests.reliability.crash import HarnessConfig, run
from tests.support.driver import cleanup_under

pytestmark = pytest.mark.integration


def test_fifteen_kills_lose_and_leak_nothing(tmp_path: Path) -> None:
    require_root()
    try:
        report = run(HarnessConfig(root=tmp_path / "crash", kills=15, seed=8, workers=3))
    finally:
        cleanup_under(tmp_path)
    print(report.render())
    counts = report.counts
    assert counts.kills >= 16, "the driver was not killed as often as asked"
    assert counts.volumes > counts.kills, "the workload hardly ran: the test proves nothing"
    assert counts.checksums_verified > 0
    assert report.ok, report.render()
