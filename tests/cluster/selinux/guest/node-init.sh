#!/bin/sh
# PID 1 of the VM Kubernetes node (exec'd by the image's /usr/local/sbin/e2e-init from the payload
# disk mounted at /payload). Brings up SELinux (enforcing), cgroup2, the network link to the
# cluster (tests/cluster/selinux/node_vm.py), containerd with enable_selinux = true and the
# images, then kubelet; then waits for the host's requests, which arrive as files the host makes
# through a privileged node-shell pod: /run/node-restart-kubelet restarts kubelet, /run/node-stop
# stops kubelet and containerd and powers the VM off, /run/node-reboot shuts the node down the way
# a reboot does and restarts the machine (QEMU runs with -no-reboot, so it exits, and the host
# starts it again on the same disks: node_vm.py). Lines the host parses start with "NODE-".
#
# The same root boots again after a reboot: what lives in tmpfs (/run, /tmp) starts empty, while
# /var/lib/{kubelet,containerd,csi-hostpath-selinux} and the results disk are kept.
set -u
export PATH=/payload/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8

. /payload/guest_lib.sh

say() { echo "NODE-INIT: $(date +%T) $*"; }
down() {
    echo "NODE-DOWN: $*"
    guest_halt o
}

. /payload/node/env

guest_early_mounts || down "no results disk"
guest_dev_mounts
mkdir -p /var/lib/node-init
boot=$(( $(cat /var/lib/node-init/boots 2>/dev/null || echo 0) + 1 ))
echo "$boot" >/var/lib/node-init/boots
echo "NODE-BOOT: $boot"

say "kernel $(uname -r); loading the SELinux policy"
if ! load_policy -i; then
    echo "NODE-ENFORCE: Disabled reason=load_policy failed"
    down "load_policy failed"
fi
# Enforcing mode denies module loading from the unlabelled payload/init: load everything now.
for module in virtio_net loop ext4 xfs overlay bridge veth br_netfilter nfs nfsv4 nfsd cifs; do
    modprobe "$module" || say "modprobe $module failed"
done

hostname "$NODE_NAME"
[ -s /etc/machine-id ] || tr -d '-' </proc/sys/kernel/random/uuid >/etc/machine-id
echo "$NODE_NAME" >/etc/hostname
printf '127.0.0.1\tlocalhost\n%s\t%s\n' "$NODE_IP" "$NODE_NAME" >/etc/hosts
# QEMU's DNS address; restrict=on means nothing answers, which is all kubelet needs of it.
echo "nameserver 10.96.0.3" >/etc/resolv.conf
ip link set lo up
ip addr add "$NODE_IP/32" dev lo
nic=""
for _ in $(seq 1 50); do
    nic=$(ls /sys/class/net | grep -v -x -e lo | head -n 1)
    [ -n "$nic" ] && break
    sleep 0.2
done
[ -n "$nic" ] || down "no network interface"
ip link set "$nic" up
ip addr add "$GUEST_ADDR/$GUEST_PREFIX" dev "$nic"
ip route add default via "$GUEST_GATEWAY" dev "$nic"
say "network: $nic $GUEST_ADDR/$GUEST_PREFIX, node IP $NODE_IP on lo"

# cgroup v2 with the controllers kubelet's cgroupfs driver uses.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for controller in cpu cpuset memory pids io hugetlb; do
    echo "+$controller" >/sys/fs/cgroup/cgroup.subtree_control || say "cgroup controller $controller unavailable"
done
# Bidirectional mount propagation (the driver's mounts reaching kubelet) needs shared mounts.
mount --make-rshared /
mkdir -p /etc/cni/net.d /var/lib/kubelet /var/log/pods /var/log/containers /run/containerd \
    /var/lib/csi-hostpath-selinux
cp /payload/node/10-bridge.conflist /etc/cni/net.d/

# The servers of the NFS and CIFS scenarios, on the guest's loopback only: the driver pod is
# hostNetwork, so it reaches them at 127.0.0.1 as a node reaches its storage network (the same
# servers as tests/e2e/guest/init.sh; started before enforcing mode, as there).
say "starting the NFS server and Samba on loopback"
mkdir -p /srv/nfs /run/rpcbind /var/lib/nfs/rpc_pipefs /var/lib/nfs/v4recovery /srv/smb \
    /run/samba /var/log/samba /var/lib/samba/private
chmod 0777 /srv/nfs /srv/smb
mount -t nfsd nfsd /proc/fs/nfsd
mount -t rpc_pipefs sunrpc /var/lib/nfs/rpc_pipefs
echo "/srv/nfs 127.0.0.1(rw,sync,no_subtree_check,no_root_squash,insecure,fsid=1)" >/etc/exports
rpcbind -w
exportfs -ra
rpc.mountd
rpc.nfsd -H 127.0.0.1 4 || say "rpc.nfsd failed"
cat >/etc/samba/smb.conf <<'EOF'
[global]
   server role = standalone server
   interfaces = lo
   bind interfaces only = yes
   disable netbios = yes
   smb ports = 445
   server min protocol = SMB2_10
   log file = /var/log/samba/log.%m
   log level = 1
[share]
   path = /srv/smb
   read only = no
   valid users = e2e
   force user = root
EOF
printf 'e2e-password\ne2e-password\n' | smbpasswd -s -a e2e >/dev/null || say "smbpasswd failed"
smbd --daemon || say "smbd failed"

say "switching SELinux to enforcing mode"
setenforce 1 || say "setenforce 1 failed"
echo "NODE-ENFORCE: $(getenforce)"
say "init runs as $(cat /proc/self/attr/current | tr -d '\0')"

echo "=== boot $boot ===" >>/results/containerd.log
containerd --config /payload/node/containerd.toml >>/results/containerd.log 2>&1 &
containerd_pid=$!
for _ in $(seq 1 120); do
    ctr version >/dev/null 2>&1 && break
    sleep 0.5
done
ctr version >/dev/null 2>&1 || down "containerd did not start: $(tail -n 20 /results/containerd.log)"
say "containerd up; importing the images"
# After a reboot containerd still has them (its root is kept): importing costs ~2 min under TCG.
# A marker per archive, in containerd's own root, says it was imported into it.
for archive in /payload/images/*.tar; do
    marker="/var/lib/containerd/node-init-imported-$(basename "$archive")"
    if [ -e "$marker" ]; then
        continue
    fi
    if ctr -n k8s.io images import "$archive" >/dev/null; then
        touch "$marker"
    else
        say "import of $archive failed"
    fi
done
say "images: $(ctr -n k8s.io images ls -q | grep -v sha256 | tr '\n' ' ')"

echo "=== boot $boot ===" >>/results/kubelet.log
start_kubelet() {
    kubelet --config=/payload/node/kubelet.yaml --kubeconfig=/payload/node/kubeconfig \
        --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=2 >>/results/kubelet.log 2>&1 &
    kubelet_pid=$!
    say "kubelet started (pid $kubelet_pid)"
}
start_kubelet
echo "NODE-UP"

# A shutdown as systemd makes it for a reboot: kubelet and containerd stopped, every other process
# (the containers, their shims, the storage servers) sent SIGTERM then SIGKILL, the mounts under
# kubelet's directory undone deepest first, loop devices detached, disks synced; then the machine
# restarts (sysrq b). Nothing of the driver's is unmounted by the driver: it is killed with the rest.
reboot_node() {
    say "rebooting: stopping kubelet, containerd and every process"
    kill "$kubelet_pid" 2>/dev/null
    wait "$kubelet_pid" 2>/dev/null
    kill "$containerd_pid" 2>/dev/null
    wait "$containerd_pid" 2>/dev/null
    kill -TERM -1 2>/dev/null
    sleep 3
    kill -KILL -1 2>/dev/null
    sleep 1
    awk '$5 ~ "^/var/lib/kubelet/" { print $5 }' /proc/self/mountinfo | sort -r | while read -r point; do
        umount "$point" || say "umount $point failed"
    done
    losetup -D
    say "mounts left under /var/lib/kubelet: $(awk '$5 ~ "^/var/lib/kubelet/"' /proc/self/mountinfo | wc -l); loop devices: $(losetup -a | wc -l)"
    dmesg >"/results/dmesg-boot$boot.log"
    echo "NODE-REBOOTING: boot $boot ends"
    guest_halt b
}

while [ ! -e /run/node-stop ]; do
    if [ -e /run/node-reboot ]; then
        reboot_node
    fi
    if [ -e /run/node-restart-kubelet ]; then
        rm -f /run/node-restart-kubelet
        kill "$kubelet_pid"
        wait "$kubelet_pid"
        say "kubelet stopped for a restart"
        start_kubelet
        echo "NODE-KUBELET-RESTARTED"
    fi
    sleep 1
done

say "stopping: kubelet, then containerd"
kill "$kubelet_pid" 2>/dev/null
wait "$kubelet_pid" 2>/dev/null
kill "$containerd_pid" 2>/dev/null
wait "$containerd_pid" 2>/dev/null
dmesg >/results/dmesg.log
down "stopped on request"
