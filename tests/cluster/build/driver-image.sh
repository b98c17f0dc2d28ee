#!/usr/bin/env bash
# The driver image of the test cluster, built from the project's own Dockerfile with Debian's buildah
# and the TEST STAND-IN base images of bases.sh in place of the two pinned bases (this machine
# reaches no image registry): each base reference, exactly as the Dockerfile writes it, is mapped to
# a local stand-in with --build-context, so the Dockerfile is built unchanged.
#
#   driver-image.sh REPO BASES_DIR OUT REF
#
# The result is tagged REF (localhost/csi-hostpath-selinux:test) and labelled as a test build: it is
# never a release image. Buildah runs with its own storage under the cache, chroot isolation and the
# host network (no CNI bridge, no sysctl change); the RUN steps see the host's CA bundle read-only,
# for pip's TLS to PyPI, and it does not end up in the image.
set -euo pipefail
repo=${1:?repo} bases=${2:?bases dir} out=${3:?output tar} ref=${4:?image ref}
state=$(dirname "$bases")/buildah
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
B=(buildah --root "$state/storage" --runroot "$run" --storage-driver vfs)

go_base=localhost/test-stand-in/golang:stand-in
py_base=localhost/test-stand-in/python:stand-in
"${B[@]}" rmi -f "$go_base" "$py_base" >/dev/null 2>&1 || true
"${B[@]}" pull -q "docker-archive:$bases/go.tar" >/dev/null
"${B[@]}" tag "$("${B[@]}" images -q --filter reference='localhost/test-stand-in/golang' | head -1)" "$go_base"
"${B[@]}" pull -q "docker-archive:$bases/python.tar" >/dev/null
"${B[@]}" tag "$("${B[@]}" images -q --filter reference='localhost/test-stand-in/python' | head -1)" "$py_base"

contexts=()
while read -r base; do
    case $base in
    *golang:*) contexts+=(--build-context "$base=docker-image://$go_base") ;;
    *python:*) contexts+=(--build-context "$base=docker-image://$py_base") ;;
    *) echo "driver-image.sh: no stand-in for base image $base" >&2; exit 1 ;;
    esac
done < <(sed -n 's/^FROM[[:space:]]\+\([^[:space:]]\+\).*/\1/p' "$repo/Dockerfile" | sort -u)

ca=/etc/ssl/certs/ca-certificates.crt
"${B[@]}" build --isolation chroot --network host --pull=never --layers=false \
    "${contexts[@]}" \
    -v "$ca:$ca:ro" \
    --label csi-hostpath-selinux.test-build=true \
    --label "org.opencontainers.image.description=TEST BUILD of csi-hostpath-selinux on stand-in base images (tests/cluster/build); never release" \
    -t "$ref" -f "$repo/Dockerfile" "$repo"
mkdir -p "$(dirname "$out")"
rm -f "$out.tmp"
"${B[@]}" push -q "$ref" "docker-archive:$out.tmp:$ref"
mv "$out.tmp" "$out"
# Keep the bases (the next build reuses them), drop the image and the build's leftovers.
"${B[@]}" rmi -f "$ref" >/dev/null
"${B[@]}" rm -a >/dev/null 2>&1 || true
