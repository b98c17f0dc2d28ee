#!/usr/bin/env bash
# Images of the test cluster, made without a registry: a root filesystem directory becomes a
# one-layer OCI image (umoci), exported with skopeo as a docker-archive tar that carries its image
# name, so that `ctr -n k8s.io images import FILE` makes it available under exactly that name.
#
#   images.sh pause   K8S_VERSION OUT REF        build/pause/linux/pause.c of k8s.io/kubernetes
#   images.sh busybox OUT REF                    Debian's busybox-static with all applet links
#   images.sh binary  OUT REF BINARY [LABEL=V…]  one static binary as /NAME, the entrypoint
#   images.sh e2e     AGNHOST DIR REGISTRY       the images the upstream e2e storage suites use
#   images.sh rootfs  OUT REF DIR [umoci config args…]   any root filesystem directory
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# oci_image ROOTFS OUT REF [umoci config args…]
oci_image() {
    local rootfs=$1 out=$2 ref=$3
    shift 3
    local t
    t=$(mktemp -d)
    tar -C "$rootfs" --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -cf "$t/layer.tar" .
    umoci init --layout "$t/oci"
    umoci new --image "$t/oci:img"
    umoci raw add-layer --image "$t/oci:img" "$t/layer.tar"
    umoci config --image "$t/oci:img" --no-history --created 1970-01-01T00:00:00Z \
        --config.label "csi-hostpath-selinux.test-build=true" "$@"
    mkdir -p "$(dirname "$out")"
    rm -f "$out.tmp"
    skopeo --insecure-policy copy -q "oci:$t/oci:img" "docker-archive:$out.tmp:$ref"
    mv "$out.tmp" "$out"
    rm -rf "$t"
}

# A minimal root: the directories and account files images from a registry usually have.
base_root() {
    local r=$1
    mkdir -p "$r"/{bin,etc,tmp,var,root,proc,sys,dev}
    chmod 1777 "$r/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' >"$r/etc/group"
}

busybox_root() {
    local r=$1 applet
    base_root "$r"
    cp /bin/busybox "$r/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [[ -e $r/bin/$applet ]] || ln -s busybox "$r/bin/$applet"
    done
    mkdir -p "$r/usr/bin" "$r/usr/sbin" "$r/sbin" "$r/home"
}

labels() { local l; for l in "$@"; do printf -- '--config.label\0%s\0' "$l"; done; }

mode=${1:?mode}
shift
case $mode in
pause)
    version=$1 out=$2 ref=$3
    moddir=$(go mod download -json "k8s.io/kubernetes@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    r=$(mktemp -d)
    tag=${ref##*:}
    gcc -Os -Wall -Werror -static -DVERSION="v$tag-csi-hostpath-selinux-test" \
        -o "$r/pause" "$moddir/build/pause/linux/pause.c"
    oci_image "$r" "$out" "$ref" --config.entrypoint /pause --config.user 65535:65535 \
        --config.label "org.opencontainers.image.description=pause from k8s.io/kubernetes@$version build/pause, built for the project's test cluster"
    rm -rf "$r"
    ;;
busybox)
    out=$1 ref=$2
    r=$(mktemp -d)
    busybox_root "$r"
    oci_image "$r" "$out" "$ref" --config.cmd sh \
        --config.label "org.opencontainers.image.description=TEST IMAGE: Debian busybox-static $(dpkg-query -W -f '${Version}' busybox-static) standing in for $ref"
    rm -rf "$r"
    ;;
binary)
    out=$1 ref=$2 bin=$3
    shift 3
    r=$(mktemp -d)
    base_root "$r"
    name=$(basename "$bin")
    cp "$bin" "$r/$name"
    mapfile -d '' -t extra < <(labels "$@")
    oci_image "$r" "$out" "$ref" --config.entrypoint "/$name" "${extra[@]}"
    rm -rf "$r"
    ;;
e2e)
    # test/utils/image/manifest.go of k8s.io/kubernetes v1.37.2: the storage suites run BusyBox
    # (the default test image), Agnhost, Nginx (volumes: exec of a file on the volume, through
    # /bin/sh) and GlibcDnsTesting (multivolume: a shell loop). Upstream builds the last three on
    # alpine/debian; here each is busybox plus, for agnhost, the agnhost binary of the same module.
    agnhost=$1 dir=$2 registry=$3
    standin="TEST IMAGE built by csi-hostpath-selinux's test cluster build, not the upstream image"
    r=$(mktemp -d)
    busybox_root "$r"
    oci_image "$r" "$dir/e2e-busybox.tar" "$registry/busybox:1.37.0-2" --config.cmd sh \
        --config.label "org.opencontainers.image.description=$standin (Debian busybox-static)"
    oci_image "$r" "$dir/e2e-nginx.tar" "$registry/nginx:1.27.0-2" --config.cmd sh \
        --config.label "org.opencontainers.image.description=$standin (busybox: the storage suites only run /bin/sh in it)"
    oci_image "$r" "$dir/e2e-glibc-dns-testing.tar" "$registry/glibc-dns-testing:2.1.1" --config.cmd sh \
        --config.label "org.opencontainers.image.description=$standin (busybox: the storage suites only run /bin/sh in it)"
    cp "$agnhost" "$r/agnhost"
    ln -s agnhost "$r/agnhost-2"
    mkdir -p "$r/uploads"
    oci_image "$r" "$dir/agnhost.tar" "$registry/agnhost:2.66.1" \
        --config.entrypoint /agnhost --config.cmd pause \
        --config.label "org.opencontainers.image.description=$standin (agnhost of k8s.io/kubernetes test/images/agnhost on busybox)"
    rm -rf "$r"
    ;;
rootfs)
    out=$1 ref=$2 dir=$3
    shift 3
    oci_image "$dir" "$out" "$ref" "$@"
    ;;
*)
    echo "images.sh: unknown mode $mode" >&2
    exit 2
    ;;
esac
