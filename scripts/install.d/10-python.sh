#!/usr/bin/env bash
# Python side: the package (its build generates the CSI stubs, so Go must be present) and test tools.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v go >/dev/null || { echo "10-python: the Go toolchain is needed to fetch the CSI spec" >&2; exit 1; }
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test]'
