"""`python -m tests.fuzz --examples N [--seed S]`: the RPC fuzz run with a larger budget."""

from __future__ import annotations

import argparse
import os
import sys

import pytest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fuzz", description="Fuzz every CSI RPC of the real driver (needs root)."
    )
    parser.add_argument("--examples", type=int, default=50000, help="hypothesis examples to run")
    parser.add_argument(
        "--seed", type=int, help="a seed for new examples (default: the fixed CI sequence)"
    )
    args, rest = parser.parse_known_args(argv)
    os.environ["CSI_FUZZ_EXAMPLES"] = str(args.examples)
    if args.seed is not None:
        os.environ["CSI_FUZZ_SEED"] = str(args.seed)
    here = os.path.dirname(os.path.abspath(__file__))
    return int(pytest.main(["-q", "-s", "-p", "no:cacheprovider", here, *rest]))


if __name__ == "__main__":
    sys.exit(main())
