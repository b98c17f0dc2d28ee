#!/usr/bin/env bash
# TEST STAND-INS for the two base images the project's Dockerfile pins (this machine reaches no
# image registry). Never releasable: they carry the label csi-hostpath-selinux.test-stand-in=true
# and names under localhost/test-stand-in/, and the driver image built on them is tagged :test.
#
#   bases.sh OUTDIR GO_TOOLCHAIN      (e.g. go1.25.4)
#
#   OUTDIR/python.tar  for python:3.11.*-slim-bookworm: a debootstrap bookworm minbase with Debian's
#                      python3 and pip (Debian's marker against pip installs removed, apt lists
#                      empty, as in the official image)
#   OUTDIR/go.tar      for golang:*-bookworm: only /usr/local/go, the Go toolchain of that version
#                      from the Go module proxy (golang.org/toolchain), which is all the Dockerfile
#                      copies from it
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?output dir}
toolchain=${2:?Go toolchain, e.g. go1.25.4}
mkdir -p "$out"
label="csi-hostpath-selinux.test-stand-in=true"
desc="TEST STAND-IN base image for csi-hostpath-selinux's test cluster build; never release an image built on it"

work=$(mktemp -d "$out/work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Go: the toolchain module's tree as /usr/local/go.
gomod=$(go mod download -json "golang.org/toolchain@v0.0.1-$toolchain.linux-amd64" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
mkdir -p "$work/go/usr/local" "$work/go/tmp"
cp -r "$gomod" "$work/go/usr/local/go"
chmod -R u+w "$work/go"
chmod 1777 "$work/go/tmp"
# The module zip carries no file modes: the toolchain's programs need their exec bits back.
chmod 755 "$work/go/usr/local/go/bin/"* "$work/go/usr/local/go/pkg/tool/"*/*
"$here/images.sh" rootfs "$out/go.tar" "localhost/test-stand-in/golang:${toolchain#go}" "$work/go" \
    --config.env "PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --config.env "GOLANG_VERSION=${toolchain#go}" \
    --config.label "$label" --config.label "org.opencontainers.image.description=$desc"

# Python: Debian bookworm with Debian's python3.
root=$work/python
debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates bookworm "$root" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
rm -rf "$root"/dev/* "$root"/proc/* "$root"/sys/* "$root"/run/*
ln -sf python3 "$root/usr/bin/python"
"$here/images.sh" rootfs "$out/python.tar" "localhost/test-stand-in/python:3.11-slim-bookworm" "$root" \
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --config.env "LANG=C.UTF-8" --config.cmd python3 \
    --config.label "$label" --config.label "org.opencontainers.image.description=$desc"
