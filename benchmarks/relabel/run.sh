#!/bin/bash
# One command for the relabel benchmark (issue 6): boots the e2e SELinux VM and writes
# docs/relabel-benchmark.md and .png. usage: benchmarks/relabel/run.sh [--help | options]
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
exec python3 -m benchmarks.relabel "$@"
