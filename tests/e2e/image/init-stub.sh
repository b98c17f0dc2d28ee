#!/bin/sh
# PID 1 of the e2e VM. The real init script travels on the payload disk (/dev/vdb), so it can
# change without rebuilding the cached root image. The initramfs has moved /dev, /proc and /sys
# onto the root already; they are mounted here only when missing (booting without an initrd).
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /payload
if mount -t ext4 -o ro /dev/vdb /payload && [ -x /payload/init.sh ]; then
    exec /payload/init.sh
fi
echo "E2E-INIT: no payload disk with init.sh on /dev/vdb"
echo o >/proc/sysrq-trigger
sleep 30
