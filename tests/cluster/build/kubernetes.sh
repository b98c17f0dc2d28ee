#!/usr/bin/env bash
# Build the Kubernetes binaries the test cluster runs, from the Go module proxy.
#   kubernetes.sh VERSION OUTDIR            the control plane, kubelet, kubectl, e2e.test, ginkgo
#   kubernetes.sh VERSION OUTDIR agnhost    only test/images/agnhost (the e2e suites' test image)
# The k8s.io/kubernetes module zip has no staging/ tree and an empty vendor/: copy the module
# writable, drop go.work and vendor, and require the published k8s.io/* staging modules instead
# of the ./staging replaces. Version ldflags as hack/lib/version.sh sets them, so that the node and
# `kubectl version` report VERSION instead of v0.0.0-master.
set -euo pipefail
version=${1:?version, e.g. v1.37.2}
out=${2:?output dir}
what=${3:-cluster}
staging_version=v0.${version#v1.}          # v1.37.2 -> v0.37.2
major=${version#v}; major=${major%%.*}
minor=${version#v*.}; minor=${minor%%.*}
src=$out.src-$what

moddir=$(go mod download -json "k8s.io/kubernetes@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
rm -rf "$src"
# On an empty cache nothing has made OUTDIR's parent yet (cp -r does not make parents).
mkdir -p "$(dirname "$src")"
cp -r "$moddir" "$src"
chmod -R u+w "$src"
cd "$src"
rm -rf go.work go.work.sum vendor
# Every `k8s.io/<name> => ./staging/src/k8s.io/<name>` becomes a require of the published module.
mapfile -t staged < <(go mod edit -json | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith("./staging/"):
        print(r["Old"]["Path"])')
args=()
for m in "${staged[@]}"; do args+=("-dropreplace=$m" "-require=$m@$staging_version"); done
go mod edit "${args[@]}"

ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
if [[ $what == agnhost ]]; then
  mkdir -p "$out"
  go build -ldflags "$ldflags" -o "$out/agnhost.tmp" ./test/images/agnhost
  mv "$out/agnhost.tmp" "$out/agnhost"
  rm -rf "$src"
  exit 0
fi
mkdir -p "$out.tmp"
# One go invocation for the five commands (shared compilation), one for e2e.test (reuses the cache).
t0=$SECONDS
go build -ldflags "$ldflags" -o "$out.tmp/" \
  ./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kube-scheduler ./cmd/kubelet ./cmd/kubectl
echo "kubernetes.sh: the five commands in $((SECONDS - t0)) s" >&2
t0=$SECONDS
go test -c -ldflags "$ldflags" -o "$out.tmp/e2e.test" ./test/e2e
echo "kubernetes.sh: e2e.test in $((SECONDS - t0)) s" >&2
t0=$SECONDS
# The ginkgo CLI at the version the module requires, to run e2e.test in parallel.
go build -ldflags "-s -w" -o "$out.tmp/" github.com/onsi/ginkgo/v2/ginkgo
echo "kubernetes.sh: ginkgo in $((SECONDS - t0)) s" >&2
rm -rf "$out"
mv "$out.tmp" "$out"
rm -rf "$src"
