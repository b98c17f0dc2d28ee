#!/bin/bash
# Builds the e2e VM's root filesystem image. Run as root on a Debian host.
# usage: build.sh MIRROR WORKDIR DEB_CACHE_DIR OUTPUT_DIR
# Writes OUTPUT_DIR/root.img (sparse ext4, 6 GiB: the VM node keeps its container images there), OUTPUT_DIR/vmlinuz and OUTPUT_DIR/initrd.img.
# Every input of this script (this file, packages.txt, container.cil, init-stub.sh) is part of the
# image cache key computed by tests/e2e/vm.py, so editing any of them rebuilds the image.
set -euo pipefail

mirror=$1
work=$2
debcache=$3
out=$4
here=$(dirname "$(readlink -f "$0")")
rootfs=$work/rootfs
suite=bookworm

step() { printf '[build %(%H:%M:%S)T] %s\n' -1 "$*"; }

packages=$(grep -v -e '^#' -e '^$' "$here/packages.txt" | paste -sd, -)
mkdir -p "$debcache"
rm -rf "$rootfs"
step "debootstrap --variant=minbase $suite from $mirror"
debootstrap --variant=minbase --include="$packages" --cache-dir="$debcache" \
    "$suite" "$rootfs" "$mirror"

step "configuring SELinux (permissive at boot; the init script switches to enforcing)"
printf 'SELINUX=permissive\nSELINUXTYPE=default\n' >"$rootfs/etc/selinux/config"
echo e2e-vm >"$rootfs/etc/hostname"
printf '127.0.0.1\tlocalhost e2e-vm\n' >"$rootfs/etc/hosts"
: >"$rootfs/etc/fstab"
# The sole unix user the Samba share authenticates (its password is set at boot).
chroot "$rootfs" useradd --no-create-home --shell /usr/sbin/nologin e2e

step "installing the container policy module (container_file_t, container_t, spc_t, e2e_pod_t)"
install -m 0644 "$here/container.cil" "$rootfs/tmp/container.cil"
chroot "$rootfs" semodule -i /tmp/container.cil
rm -f "$rootfs/tmp/container.cil"
chroot "$rootfs" semodule -l | grep -qx container

step "installing the init stub"
install -m 0755 "$here/init-stub.sh" "$rootfs/usr/local/sbin/e2e-init"

step "trimming caches"
rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"* \
    "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/locale"

step "labelling the root filesystem with the policy's file_contexts"
# setfiles needs /proc in the chroot (without it every file fails with ENOENT). The host kernel
# has no SELinux, so it stores the security.selinux xattrs as given; mkfs.ext4 -d copies them.
fc=/etc/selinux/default/contexts/files/file_contexts
mount -t proc proc "$rootfs/proc"
trap 'umount "$rootfs/proc" 2>/dev/null || true' EXIT
chroot "$rootfs" setfiles -F -e /proc -e /sys -e /dev "$fc" /
umount "$rootfs/proc"
trap - EXIT
label=$(getfattr -n security.selinux --only-values "$rootfs/usr/sbin/smbd")
echo "label of /usr/sbin/smbd: $label"
case $label in *smbd_exec_t*) ;; *) echo "rootfs not labelled" >&2; exit 1 ;; esac

step "copying the kernel and initrd out of /boot"
kernel=$(find "$rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
initrd=$(find "$rootfs/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
test -n "$kernel" && test -n "$initrd"
mkdir -p "$out"
cp "$kernel" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"

step "making the ext4 image"
rm -f "$out/root.img"
mkfs.ext4 -q -L e2e-root -d "$rootfs" "$out/root.img" 6G
rm -rf "$rootfs"
step "done: $out"
