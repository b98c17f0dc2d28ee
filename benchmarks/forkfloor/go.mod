module csi-hostpath-selinux-bench/forkfloor

go 1.22
