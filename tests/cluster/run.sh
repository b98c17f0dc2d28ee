#!/usr/bin/env bash
# The real one-node Kubernetes cluster tests, one command: builds what is missing
# (scripts/install.d/70-cluster.sh, 16 min cold on an idle machine, up to 54 min under load, seconds warm), then starts the cluster, deploys the
# driver from deploy/kubernetes, runs the scenarios and Kubernetes' External Storage e2e suites, and
# stops the cluster, leaving nothing behind. Extra arguments go to pytest (e.g. -k provisioning).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ ${CSI_CLUSTER_SKIP_BUILD:-0} != 1 ]]; then
    bash scripts/install.d/70-cluster.sh
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec python3 -m pytest tests/cluster -m cluster -v -s "$@"
