#!/bin/bash
# One command for the e2e suite: build or reuse the SELinux VM image, boot it, run the guest suite.
# usage: tests/e2e/run.sh [WORKDIR]   (as root; see tests/e2e/README.md)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
exec python3 -m tests.e2e "$@"
