#!/usr/bin/env bash
# Builds or installs every component of the one-node test cluster into $CACHE and writes
# $CACHE/cluster.json (the interface with tests/cluster/). Run by scripts/install.d/70-cluster.sh.
# Each step runs only when its stamp ($CACHE/stamps/<step>.<key>) or its output is missing, so a warm
# run only checks stamps; each step logs its duration. See tests/cluster/build/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
CACHE=${CSI_CLUSTER_CACHE:-/var/cache/csi-hostpath-selinux/cluster}
export CSI_CLUSTER_CACHE=$CACHE

# Pins. The sidecar versions are the ones deploy/kubernetes/30-node-daemonset.yaml names.
K8S_VERSION=v1.37.2
PROVISIONER_MODULE=github.com/kubernetes-csi/external-provisioner/v6
PROVISIONER_VERSION=v6.4.0
SNAPSHOTTER_MODULE=github.com/kubernetes-csi/external-snapshotter/v8
SNAPSHOTTER_VERSION=v8.7.0
GO_BASE_TOOLCHAIN=go1.25.4          # the Dockerfile's golang base, for the driver image's stand-in
REGISTRAR_REF=registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.16.0
LIVENESSPROBE_REF=registry.k8s.io/sig-storage/livenessprobe:v2.19.0
PAUSE_REF=registry.k8s.io/pause:3.10.2        # kubelet's default sandbox image in v1.37
BUSYBOX_REF=docker.io/library/busybox:1.37    # the image deploy/examples use
E2E_REGISTRY=registry.k8s.io/e2e-test-images  # test/utils/image/manifest.go in k8s.io/kubernetes
DRIVER_REF=localhost/csi-hostpath-selinux:test

log() { printf '70-cluster: %s\n' "$*" >&2; }
export NICE=${CLUSTER_BUILD_NICE:-5}

# step NAME KEY OUTPUT COMMAND...: run COMMAND unless the stamp NAME.KEY and OUTPUT both exist.
step() {
    local name=$1 key=$2 output=$3
    shift 3
    local stamp="$CACHE/stamps/$name.$key"
    if [[ -e $stamp && -e $output ]]; then
        return 0
    fi
    log "$name ($key): building, log in $CACHE/logs/$name.log"
    local t0=$SECONDS
    mkdir -p "$CACHE/logs"
    if ! "$@" >"$CACHE/logs/$name.log" 2>&1; then
        tail -n 40 "$CACHE/logs/$name.log" >&2
        log "$name: FAILED after $((SECONDS - t0)) s (whole log: $CACHE/logs/$name.log)"
        return 1
    fi
    [[ -e $output ]] || { log "$name: $output was not made"; return 1; }
    built=1
    mkdir -p "$CACHE/stamps"
    rm -f "$CACHE/stamps/$name".*
    echo "$((SECONDS - t0))" >"$stamp"
    log "$name ($key): done in $((SECONDS - t0)) s"
}

mkdir -p "$CACHE"
t_all=$SECONDS
built=0
source "$here/lib.sh"

# --- Host tools (Debian): image tools, runc, CNI plugins, busybox, gcc for pause ---------------
ensure_apt_packages buildah umoci skopeo socat runc containernetworking-plugins busybox-static \
    gcc libc6-dev iptables

# --- Daemons from Debian, unpacked into the cache (never installed: no host services) ----------
etcd_ver=$(deb_candidate etcd-server)
containerd_ver=$(deb_candidate containerd)
step etcd "$etcd_ver" "$CACHE/debian/etcd-server_$etcd_ver/usr/bin/etcd" \
    deb_unpack etcd-server "$etcd_ver" "$CACHE/debian/etcd-server_$etcd_ver"
step containerd "$containerd_ver" "$CACHE/debian/containerd_$containerd_ver/usr/bin/containerd" \
    deb_unpack containerd "$containerd_ver" "$CACHE/debian/containerd_$containerd_ver"
etcd_dir=$CACHE/debian/etcd-server_$etcd_ver/usr/bin
containerd_dir=$CACHE/debian/containerd_$containerd_ver/usr/bin

# --- Kubernetes from the Go module proxy ---------------------------------------------------------
k8s_bin=$CACHE/k8s/$K8S_VERSION/bin
# Keyed by version and Go toolchain; bump K8S_BUILD_REV when kubernetes.sh changes what it makes.
K8S_BUILD_REV=1
k8s_key="$K8S_VERSION-$(go env GOVERSION)-r$K8S_BUILD_REV"
step kubernetes "$k8s_key" "$k8s_bin/e2e.test" \
    nice -n "$NICE" "$here/kubernetes.sh" "$K8S_VERSION" "$k8s_bin"

((built)) && write_manifest partial

# --- Images: pause, busybox --------------------------------------------------------------------
images=$CACHE/images
step image-pause "$K8S_VERSION" "$images/pause.tar" \
    "$here/images.sh" pause "$K8S_VERSION" "$images/pause.tar" "$PAUSE_REF"
busybox_ver=$(dpkg-query -W -f '${Version}' busybox-static | tr ':~+' '___')
step image-busybox "$busybox_ver" "$images/busybox.tar" \
    "$here/images.sh" busybox "$images/busybox.tar" "$BUSYBOX_REF"

# --- Test stand-ins (our own Go code) -----------------------------------------------------------
standins_key=$(src_hash "$repo/tests/cluster/standins" "$here/images.sh")
standins=$CACHE/standins/$standins_key
step standins "$standins_key" "$images/livenessprobe.tar" build_standins "$standins" "$images"

((built)) && write_manifest partial

# --- kubernetes-csi sidecars from the Go module proxy -------------------------------------------
prov_bin=$CACHE/go/external-provisioner@$PROVISIONER_VERSION
step csi-provisioner "$PROVISIONER_VERSION" "$images/csi-provisioner.tar" \
    build_sidecar "$PROVISIONER_MODULE" "$PROVISIONER_VERSION" "$prov_bin" \
        "csi-provisioner=registry.k8s.io/sig-storage/csi-provisioner:$PROVISIONER_VERSION"

# --- The driver image from the project's Dockerfile, with stand-in bases -------------------------
driver_key=$(driver_context_hash)
step driver-bases "$GO_BASE_TOOLCHAIN-$(src_hash "$here/bases.sh")" "$CACHE/bases/python.tar" \
    "$here/bases.sh" "$CACHE/bases" "$GO_BASE_TOOLCHAIN"
step image-driver "$driver_key" "$images/driver.tar" \
    "$here/driver-image.sh" "$repo" "$CACHE/bases" "$images/driver.tar" "$DRIVER_REF"

((built)) && write_manifest partial

snap_bin=$CACHE/go/external-snapshotter@$SNAPSHOTTER_VERSION
step csi-snapshotter "$SNAPSHOTTER_VERSION" "$images/snapshot-controller.tar" \
    build_sidecar "$SNAPSHOTTER_MODULE" "$SNAPSHOTTER_VERSION" "$snap_bin" \
        "csi-snapshotter=registry.k8s.io/sig-storage/csi-snapshotter:$SNAPSHOTTER_VERSION" \
        "snapshot-controller=registry.k8s.io/sig-storage/snapshot-controller:$SNAPSHOTTER_VERSION"

# --- Images the upstream e2e storage suites ask for ---------------------------------------------
agnhost_dir=$CACHE/k8s/$K8S_VERSION/agnhost
step agnhost "$k8s_key" "$agnhost_dir/agnhost" \
    nice -n "$NICE" "$here/kubernetes.sh" "$K8S_VERSION" "$agnhost_dir" agnhost
step e2e-images "$K8S_VERSION-$busybox_ver-$(src_hash "$here/images.sh")" "$images/agnhost.tar" \
    "$here/images.sh" e2e "$agnhost_dir/agnhost" "$images" "$E2E_REGISTRY"

if ((built)) || [[ ! -e $CACHE/cluster.json ]]; then
    write_manifest final
fi
log "all components ready in $((SECONDS - t_all)) s; manifest $CACHE/cluster.json"
