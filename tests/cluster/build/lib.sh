# Functions of build-all.sh (sourced; uses its variables).

# apt-get, waiting for the dpkg/apt locks other installers may hold (up to 10 min, then retrying).
apt_retry() {
    local i
    for i in 1 2 3 4 5; do
        if DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; then
            return 0
        fi
        log "apt-get $1 failed (attempt $i; another installer may hold the lists lock); retrying"
        sleep 10
    done
    return 1
}

ensure_apt_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    local t0=$SECONDS
    log "apt: installing ${missing[*]}"
    if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null \
            || ! apt_retry install -y -q --no-install-recommends "${missing[@]}"; then
        apt_retry update -q
        apt_retry install -y -q --no-install-recommends "${missing[@]}"
    fi
    log "apt: done in $((SECONDS - t0)) s"
}

# The version of a Debian package the cache holds: the one apt offered when it was first unpacked
# (recorded in $CACHE/debian/PKG.version; `apt-cache policy` costs a second per package, so a warm
# run does not ask it). Delete that file to move to the version apt offers now.
deb_candidate() {
    local v record=$CACHE/debian/$1.version
    if [[ -s $record ]]; then
        v=$(<"$record")
        if [[ -d $CACHE/debian/$1_$v ]]; then
            printf '%s\n' "$v"
            return 0
        fi
    fi
    v=$(apt-cache policy "$1" | sed -n 's/^ *Candidate: //p')
    [[ -n $v && $v != "(none)" ]] || { log "apt knows no $1 (apt-get update?)"; return 1; }
    mkdir -p "$CACHE/debian"
    printf '%s\n' "$v" >"$record"
    printf '%s\n' "$v"
}

# deb_unpack PACKAGE VERSION DIR: the package's files under DIR, without running its maintainer
# scripts (etcd-server and containerd would enable and start host services).
deb_unpack() {
    local pkg=$1 ver=$2 dir=$3 tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && apt_retry download -q "$pkg=$ver" ) || { apt_retry update -q; (cd "$tmp" && apt_retry download -q "$pkg=$ver"); }
    rm -rf "$dir" "$dir.tmp"
    mkdir -p "$(dirname "$dir")"
    dpkg-deb -x "$tmp"/*.deb "$dir.tmp"
    mv "$dir.tmp" "$dir"
    rm -rf "$tmp"
}

# A short hash of the contents of files and directories (their git-tracked or present files).
src_hash() {
    find "$@" -type f ! -name '*.pyc' -print0 2>/dev/null | sort -z | xargs -0 sha256sum \
        | sed "s|$repo/||" | sha256sum | cut -c1-16
}

# The driver image depends on what the Dockerfile copies and on the build scripts.
driver_context_hash() {
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard -- Dockerfile .dockerignore pyproject.toml setup.py README.md \
        csi-spec csi_hostpath_selinux | xargs -0 sha256sum
     sha256sum "$here/driver-image.sh" "$here/bases.sh") | sha256sum | cut -c1-16
}

# build_sidecar MODULE VERSION OUTDIR CMD=REF...: `go build` of each cmd/CMD of the module from a
# writable copy of its module directory (replaces of local directories the zip lacks become
# requires of the published module), then one image per command: the static binary as /CMD.
build_sidecar() {
    local module=$1 version=$2 out=$3
    shift 3
    local moddir src
    moddir=$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    src=$out.src
    rm -rf "$src" "$out"
    mkdir -p "$(dirname "$out")"
    cp -r "$moddir" "$src"
    chmod -R u+w "$src"
    (
        cd "$src"
        rm -rf vendor go.work go.work.sum
        local r args=()
        while read -r r; do
            [[ -n $r ]] && args+=("-dropreplace=$r" "-require=$r@$version")
        done < <(go mod edit -json | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith("./"):
        print(r["Old"]["Path"])')
        ((${#args[@]} == 0)) || go mod edit "${args[@]}"
        local pkgs=() c
        for c in "$@"; do pkgs+=("./cmd/${c%%=*}"); done
        GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 nice -n "$NICE" \
            go build -ldflags "-s -w -X main.version=$version" -o "$out.tmp/" "${pkgs[@]}"
    )
    mv "$out.tmp" "$out"
    rm -rf "$src"
    local c
    for c in "$@"; do
        "$here/images.sh" binary "$images/${c%%=*}.tar" "${c#*=}" "$out/${c%%=*}" \
            "org.opencontainers.image.source=https://$module" \
            "org.opencontainers.image.version=$version" \
            "org.opencontainers.image.description=${c%%=*} built from the Go module proxy for the project's test cluster"
    done
}

# build_standins OUTDIR IMAGES: the project's test stand-ins and their images.
build_standins() {
    local out=$1 imgs=$2
    rm -rf "$out" "$out.tmp"
    (cd "$repo/tests/cluster/standins" && GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 \
        nice -n "$NICE" go build -ldflags "-s -w" -o "$out.tmp/" ./cmd/...)
    mv "$out.tmp" "$out"
    # Builds of older sources are not used any more.
    find "$(dirname "$out")" -mindepth 1 -maxdepth 1 ! -path "$out" -exec rm -rf {} +
    local desc="TEST STAND-IN of csi-hostpath-selinux's test cluster, not the upstream image; never release"
    "$here/images.sh" binary "$imgs/node-driver-registrar.tar" "$REGISTRAR_REF" \
        "$out/csi-node-driver-registrar" "csi-hostpath-selinux.test-stand-in=true" \
        "org.opencontainers.image.description=$desc"
    "$here/images.sh" binary "$imgs/livenessprobe.tar" "$LIVENESSPROBE_REF" \
        "$out/livenessprobe" "csi-hostpath-selinux.test-stand-in=true" \
        "org.opencontainers.image.description=$desc"
}

# write_manifest partial|final: $CACHE/cluster.partial.json with what exists, or (final)
# $CACHE/cluster.json with everything, each written atomically.
write_manifest() {
    MODE=$1 CACHE=$CACHE K8S_VERSION=$K8S_VERSION K8S_BIN=$k8s_bin ETCD_DIR=$etcd_dir \
    CONTAINERD_DIR=$containerd_dir IMAGES=$CACHE/images python3 "$here/manifest.py"
}
