#!/bin/sh
# The e2e VM's init (exec'd by /usr/local/sbin/e2e-init from the payload disk mounted at /payload).
# Brings up SELinux, loopback, an NFS server and Samba, switches to enforcing mode, starts the
# driver, runs the guest pytest suite, prints "E2E-RESULT: exit=N" and powers the VM off.
# Every line the host harness parses starts with "E2E-".
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

. /payload/guest_lib.sh

say() { echo "E2E-INIT: $*"; }
finish() {
    echo "E2E-RESULT: exit=$1"
    guest_halt o
}

# The initramfs already moved /dev, /proc and /sys onto the root; mount what is missing.
guest_early_mounts || finish 90
guest_dev_mounts

say "kernel $(uname -r); loading the SELinux policy"
if ! load_policy -i; then
    echo "E2E-ENFORCE: Disabled reason=load_policy failed"
    finish 91
fi
say "policy modules: $(semodule -l 2>/dev/null | grep -c .) (container: $(semodule -l 2>/dev/null | grep -x container))"
# Enforcing mode denies module loading from here, so every module the suite needs is loaded now.
for module in loop ext4 xfs nfs nfsv3 nfsv4 nfsd cifs; do
    modprobe "$module" || say "modprobe $module failed"
done
hostname e2e-vm
ip link set lo up

say "starting the NFS server on loopback"
mkdir -p /srv/nfs /run/rpcbind /var/lib/nfs/rpc_pipefs /var/lib/nfs/v4recovery
chmod 0777 /srv/nfs
mount -t nfsd nfsd /proc/fs/nfsd
mount -t rpc_pipefs sunrpc /var/lib/nfs/rpc_pipefs
echo "/srv/nfs 127.0.0.1(rw,sync,no_subtree_check,no_root_squash,insecure,fsid=1)" >/etc/exports
rpcbind -w
rpc.statd --no-notify
exportfs -ra
rpc.mountd
rpc.nfsd -H 127.0.0.1 4
exportfs -v

say "starting Samba on loopback"
mkdir -p /srv/smb /srv/smb-guest /run/samba /var/log/samba /var/lib/samba/private
chmod 0777 /srv/smb /srv/smb-guest
cat >/etc/samba/smb.conf <<'EOF'
[global]
   server role = standalone server
   interfaces = lo
   bind interfaces only = yes
   disable netbios = yes
   smb ports = 445
   server min protocol = SMB2_10
   map to guest = bad user
   log file = /var/log/samba/log.%m
   log level = 1
[share]
   path = /srv/smb
   read only = no
   valid users = e2e
   force user = root
[guest]
   path = /srv/smb-guest
   read only = no
   guest ok = yes
   guest only = yes
   force user = root
EOF
printf 'e2e-password\ne2e-password\n' | smbpasswd -s -a e2e >/dev/null
smbd --daemon
for _ in $(seq 1 60); do
    ss -ltn | grep -q ':445 ' && break
    sleep 1
done
ss -ltn

say "switching SELinux to enforcing mode"
reason=""
if ! setenforce 1; then
    reason="setenforce 1 failed"
fi
mode=$(getenforce)
if [ "$mode" = "Enforcing" ]; then
    echo "E2E-ENFORCE: $mode"
else
    echo "E2E-ENFORCE: $mode reason=${reason:-getenforce says $mode after setenforce 1}"
fi
say "init runs as $(id -Z)"

# The guest suite's session fixture starts the driver (python3 -m csi_hostpath_selinux with its
# flags, log in /results/driver.log), so a driver that fails to start is a test error with its log.
mkdir -p /run/csi /var/lib/kubelet/plugins/kubernetes.io/csi /var/lib/kubelet/pods
export PYTHONPATH=/payload/site

say "running the guest suite"
cd /payload/tests || finish 93
# /payload/pytest-args (one argument a line, optional) narrows the run, e.g. to one file.
set --
if [ -f /payload/pytest-args ]; then
    while IFS= read -r arg; do set -- "$@" "$arg"; done </payload/pytest-args
fi
[ "$#" -gt 0 ] || set -- /payload/tests
timeout 1200 python3 -m pytest -v -s --tb=short --color=no -p no:cacheprovider --junitxml=/results/junit.xml \
    --rootdir=/payload/tests "$@"
code=$?
if [ "$code" -ne 0 ] && [ -f /results/driver.log ]; then
    say "last lines of the driver log:"
    tail -n 80 /results/driver.log
fi
finish "$code"
