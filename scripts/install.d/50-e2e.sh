#!/bin/bash
# Host tools of the e2e SELinux VM harness (tests/e2e/): building the Debian image
# (debootstrap, chroot, mkfs.ext4 -d, getfattr), booting it (QEMU with TCG, qemu-img overlays)
# and reading its results disk (debugfs). Idempotent: installs only what is missing.
# Run as root on a Debian bookworm host.
set -euo pipefail

packages=(
    debootstrap            # builds the guest rootfs from Debian's packages
    debian-archive-keyring # verifies the Release files debootstrap downloads
    qemu-system-x86        # qemu-system-x86_64 (TCG: KVM guests hang on these machines)
    qemu-utils             # qemu-img: the per-run copy-on-write overlay
    e2fsprogs              # mkfs.ext4 -d (root, payload and results disks), debugfs
    attr                   # getfattr: the build checks the rootfs labels
    util-linux             # mount, losetup
    socat                  # the VM node's one way out: QEMU's guestfwd to the apiserver
    ca-certificates
)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "50-e2e: all e2e host packages are installed"
    exit 0
fi

echo "50-e2e: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when apt has none or cannot find a package in them.
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null \
    || ! apt-get install -y --no-install-recommends "${missing[@]}"; then
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi
