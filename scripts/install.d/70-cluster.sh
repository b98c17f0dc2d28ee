#!/usr/bin/env bash
# The one-node test cluster's components (issue #14), built or installed from the package registries
# into a cache outside the repository, keyed by version:
#
#   $CSI_CLUSTER_CACHE (default /var/cache/csi-hostpath-selinux/cluster)
#     k8s/<version>/bin/         kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#                                kubectl, e2e.test, ginkgo, agnhost (Go module proxy, 10-26 min cold)
#     debian/<pkg>_<version>/    etcd-server and containerd, unpacked (not installed: their
#                                maintainer scripts would enable and start host services)
#     go/<module>@<version>/bin/ kubernetes-csi sidecars built from the Go module proxy
#     standins/<hash>/           the project's test stand-ins (tests/cluster/standins/)
#     images/<name>/<key>.tar    docker-archive tars, each carrying the image name it is run under
#     cluster.json               what the harness reads, written last, when everything listed exists
#
# Every step is skipped when its stamp exists, so a warm run only checks stamps. Each step logs how
# long it took. Run as root on a Debian bookworm host (scripts/bootstrap runs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bash tests/cluster/build/build-all.sh "$@"
