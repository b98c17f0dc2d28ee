"""`python -m tests.e2e [WORKDIR]`: build or reuse the VM image, boot it, run the guest suite.

Exit code: the guest pytest's exit code (0 when every guest test passed and the guest ran
enforcing), 2 when the guest ran permissive, 3 when the harness failed or the VM timed out.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from . import vm


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python -m tests.e2e [WORKDIR]", file=sys.stderr)
        return 3
    work = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="csi-e2e-"))
    print(f"e2e: work directory {work}")
    try:
        result = vm.run(work, echo=sys.stdout)
    except vm.E2EError as exc:
        print(f"e2e: harness failed: {exc}", file=sys.stderr)
        return 3
    print(vm.summary(result))
    if result.timed_out or result.exit_code is None:
        return 3
    if result.exit_code != 0:
        print("e2e: guest failures:\n" + "\n\n".join(result.failures()))
        return result.exit_code
    if result.enforce != "Enforcing":
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
