#!/bin/sh
# Init of the relabel benchmark's VM boot (the e2e image's stub execs /payload/init.sh).
# Only what the benchmark needs: SELinux policy, loop and ext4, enforcing mode, then the guest
# benchmark program, which writes /results/relabel.json. Prints the E2E- lines the harness parses.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

. /payload/guest_lib.sh

finish() {
    echo "E2E-RESULT: exit=$1"
    guest_halt o
}

guest_early_mounts || finish 90
if ! load_policy -i; then
    echo "E2E-ENFORCE: Disabled reason=load_policy failed"
    finish 91
fi
for module in loop ext4; do
    modprobe "$module" || echo "E2E-INIT: modprobe $module failed"
done
ip link set lo up
if setenforce 1 && [ "$(getenforce)" = "Enforcing" ]; then
    echo "E2E-ENFORCE: Enforcing"
else
    echo "E2E-ENFORCE: $(getenforce) reason=setenforce 1 failed"
fi
mkdir -p /run/csi /var/lib/kubelet/plugins/kubernetes.io/csi /var/lib/kubelet/pods
export PYTHONPATH=/payload/site:/payload/tests
cd /payload/tests || finish 93
python3 /payload/bench/guest.py /payload/bench/args.json /results/relabel.json
finish $?
