#!/usr/bin/env bash
# Node tools the driver runs (mkfs.xfs is not on a fresh machine) and csi-sanity at its pin.
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
for tool in mkfs.ext4:e2fsprogs mkfs.xfs:xfsprogs losetup:mount getfattr:attr; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
version="$(cat sanity/csi-sanity.version)"
gobin="$(go env GOPATH)/bin"
stamp="$gobin/.csi-sanity-$version"
if [[ ! -x "$gobin/csi-sanity" || ! -e "$stamp" ]]; then
  GOFLAGS=-mod=mod go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$version"
  rm -f "$gobin"/.csi-sanity-*; touch "$stamp"
fi
