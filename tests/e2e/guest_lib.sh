# Shell functions of the guest inits, sourced as /payload/guest_lib.sh: the e2e suite's
# (tests/e2e/guest/init.sh), the SELinux cluster node's (tests/cluster/selinux/guest/node-init.sh)
# and the relabel benchmark's (benchmarks/relabel/guest_init.sh). It reaches the guest on the
# payload disk, which every run builds afresh (tests/e2e/vm.py install_init), not in the cached
# root image. POSIX sh: the inits run under the image's /bin/sh.

# The mounts the initramfs leaves to init: sysfs (when missing), tmpfs /run and /tmp, selinuxfs,
# and the results disk (vdc) at /results. The status is the results mount's: the caller decides
# what a missing results disk means.
guest_early_mounts() {
    mountpoint -q /sys || mount -t sysfs sysfs /sys
    mount -t tmpfs -o mode=0755 tmpfs /run
    mount -t tmpfs tmpfs /tmp
    mount -t selinuxfs selinuxfs /sys/fs/selinux
    mkdir -p /results
    mount -t ext4 /dev/vdc /results
}

# /dev/pts and /dev/shm, for what opens a pseudo-terminal or POSIX shared memory (containers,
# Samba, Python's multiprocessing).
guest_dev_mounts() {
    mkdir -p /dev/pts /dev/shm
    mount -t devpts devpts /dev/pts
    mount -t tmpfs tmpfs /dev/shm
}

# Flush the disks and end the machine through sysrq: $1 is "o" (power off; QEMU exits) or "b"
# (restart; with -no-reboot QEMU exits too, and the host boots the same disks again). The sleep
# keeps init (PID 1) from exiting, which would panic the kernel, while the sysrq takes effect.
guest_halt() {
    sync
    umount /results 2>/dev/null
    echo "$1" >/proc/sysrq-trigger
    sleep 60
}
