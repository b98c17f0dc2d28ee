"""The SELinux VM as a Kubernetes node of the harness's cluster.

The guest is the project's e2e VM image (tests/e2e/image: Debian 12, refpolicy plus
container.cil, enforcing), booted under TCG. It runs kubelet and containerd (enable_selinux =
true) from the same cluster.json as the host node; the control plane stays on the host. Its only
links to the cluster's network namespace (QEMU is started inside it, user networking with
restrict=on, so the guest reaches nothing else):

- guestfwd: the guest's 10.96.0.1:443 (the `kubernetes` Service IP, the slirp network is
  10.96.0.0/16) runs `socat STDIO TCP:127.0.0.1:443` in the cluster's netns, i.e. reaches the
  apiserver. kubelet and the in-cluster clients of hostNetwork pods (csi-provisioner) use it
  without kube-proxy, and the apiserver's certificate already names that IP.
- hostfwd: 10.200.0.3:10350 in the cluster's netns -> the guest's kubelet, so the apiserver
  reaches it for `kubectl logs` and `kubectl exec`. The guest registers 10.200.0.3 (also put on
  its `lo`) as its InternalIP.

The payload disk carries the binaries, the container images (docker archives, imported with
`ctr` before kubelet starts), the configs and credentials, and the guest init
(guest/node-init.sh). A results disk receives kubelet's and containerd's logs; it is read back
with debugfs after power-off. The guest's root is a qcow2 overlay thrown away afterwards.

reboot() restarts the machine the way a node reboots: the guest shuts down (guest init,
/run/node-reboot), QEMU (-no-reboot) exits, and a new QEMU boots the same root overlay, payload
and results disks. power_cut() is the node losing power: QEMU is killed with SIGKILL while the
guest runs, and the same disks boot again. The console log keeps both boots, one after the other.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.cluster import SERVICE_IP, Cluster, bridge_conflist
from tests.e2e import vm

HERE = Path(__file__).resolve().parent
NODE_NAME = "csi-selinux-node"
#: The guest's InternalIP: on its lo, and where QEMU's hostfwd listens in the cluster's netns.
NODE_IP = "10.200.0.3"
KUBELET_PORT = 10350
GUEST_NET = "10.96.0.0/16"
GUEST_ADDR = "10.96.0.15"
GUEST_GATEWAY = "10.96.0.2"
POD_CIDR = "10.244.1.0/24"
GUEST_BINARIES = ("kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "runc")
#: The images the node's pods use (the DaemonSet, the node shell, the scenarios' pods). Importing
#: an image costs the guest about 0.6 s per MB under TCG, so the others stay on the host.
GUEST_IMAGES = (
    "pause",
    "busybox",
    "driver",
    "node-driver-registrar",
    "livenessprobe",
    "csi-provisioner",
    "csi-snapshotter",
    "e2e-busybox",
    "agnhost",
)
#: What the console says when the guest init reaches a step (the init prints them).
MARK_ENFORCE = "NODE-ENFORCE: "
MARK_UP = "NODE-UP"
MARK_DOWN = "NODE-DOWN"
MARK_REBOOTING = "NODE-REBOOTING"


class NodeVMError(RuntimeError):
    pass


@dataclass
class NodeVM:
    cluster: Cluster
    work: Path
    memory_mb: int = 3072
    console: list[str] = field(default_factory=list)
    enforce: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    #: Index in `console` of the current boot's first line (markers are looked for from there).
    boot_start: int = 0
    boots: int = 0
    _reader: threading.Thread | None = None
    _address_added: bool = False
    _qemu_argv: list[str] = field(default_factory=list)

    # --- payload ---------------------------------------------------------------------------

    def _credentials(self) -> tuple[str, str]:
        """A kubelet client certificate for system:node:<NODE_NAME> from the cluster's CA, as an
        embedded kubeconfig for https://<Service IP>:443 (the guestfwd), and the CA."""
        pki = self.cluster.pki
        client = pki.issue(
            f"kubelet-{NODE_NAME}", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "client"
        )

        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        kubeconfig = json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": f"https://{SERVICE_IP}:443",
                            "certificate-authority-data": b64(pki.ca.cert),
                        },
                    }
                ],
                "users": [
                    {
                        "name": "kubelet",
                        "user": {
                            "client-certificate-data": b64(client.cert),
                            "client-key-data": b64(client.key),
                        },
                    }
                ],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": "kubelet"}}],
                "current-context": "local",
            }
        )
        return kubeconfig, pki.ca.cert.read_text()

    def _configs(self, node: Path) -> None:
        components = self.cluster.components
        kubeconfig, ca = self._credentials()
        (node / "kubeconfig").write_text(kubeconfig)
        (node / "ca.crt").write_text(ca)
        (node / "kubelet.yaml").write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": True},
                        "x509": {"clientCAFile": "/payload/node/ca.crt"},
                    },
                    "authorization": {"mode": "Webhook"},
                    "cgroupDriver": "cgroupfs",
                    "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
                    "port": KUBELET_PORT,
                    "resolvConf": "/etc/resolv.conf",
                    "failSwapOn": False,
                    "serializeImagePulls": False,
                    "volumeStatsAggPeriod": "10s",
                    "evictionHard": {
                        "memory.available": "50Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "syncFrequency": "10s",
                    "fileCheckFrequency": "10s",
                    "nodeStatusReportFrequency": "20s",
                }
            )
        )
        (node / "containerd.toml").write_text(f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{components.images["pause"].ref}"
  # The point of this node: containers get SELinux labels (process container_t with the pod's
  # MCS level, files container_file_t, from the policy's lxc_contexts).
  enable_selinux = true
  selinux_category_range = 1024
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/payload/bin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/payload/cni"
    conf_dir = "/etc/cni/net.d"
""")
        (node / "10-bridge.conflist").write_text(bridge_conflist(POD_CIDR))
        (node / "env").write_text(
            f"NODE_NAME={NODE_NAME}\nNODE_IP={NODE_IP}\nGUEST_ADDR={GUEST_ADDR}\n"
            f"GUEST_GATEWAY={GUEST_GATEWAY}\nGUEST_PREFIX={GUEST_NET.split('/')[1]}\n"
        )

    def build_payload(self) -> Path:
        components = self.cluster.components
        tree = self.work / "payload"
        shutil.rmtree(tree, ignore_errors=True)
        for sub in ("bin", "cni", "images", "node"):
            (tree / sub).mkdir(parents=True)
        size = 0

        def place(src: Path, dst: Path) -> None:
            nonlocal size
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            size += dst.stat().st_size

        for name in GUEST_BINARIES:
            place(Path(components.binary(name)), tree / "bin" / name)
        for plugin in components.cni_bin_dir.iterdir():
            if plugin.is_file():
                place(plugin, tree / "cni" / plugin.name)
        for name, archive in sorted(components.images.items()):
            if name in GUEST_IMAGES:
                place(archive.archive, tree / "images" / f"{name}.tar")
        self._configs(tree / "node")
        vm.install_init(tree, HERE / "guest" / "node-init.sh")
        image = self.work / "payload.img"
        image.unlink(missing_ok=True)
        megabytes = size // 2**20 * 11 // 10 + 128
        subprocess.run(
            ["mkfs.ext4", "-q", "-L", "node-payload", "-d", str(tree), str(image), f"{megabytes}M"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        shutil.rmtree(tree)
        return image

    # --- boot and stop ---------------------------------------------------------------------

    def boot(self) -> None:
        t0 = time.monotonic()
        self.work.mkdir(parents=True, exist_ok=True)
        with (self.work / "image.log").open("a") as log:
            image = vm.ensure_image(log)
        self.timings["image"] = time.monotonic() - t0
        payload = self.build_payload()
        self.timings["payload"] = time.monotonic() - t0
        with (self.work / "image.log").open("a") as log:
            overlay = vm.create_overlay(image, self.work / "root-overlay.qcow2", log)
            results = vm.make_results_disk(
                self.work / "results.img", log, label="node-results", size="512M"
            )
        # The hostfwd listens on NODE_IP in the cluster's netns. Connections to it must not come
        # from NODE_IP itself: slirp passes the client's address on to the guest (only loopback
        # sources become its gateway address), and the guest, which has NODE_IP on its lo, drops
        # a SYN from its own address as a martian. So the local route says: source 127.0.0.1.
        self.cluster.run(["ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo"])
        self._address_added = True
        self.cluster.run(
            [
                "ip",
                "route",
                "replace",
                "local",
                NODE_IP,
                "dev",
                "lo",
                "table",
                "local",
                "proto",
                "kernel",
                "scope",
                "host",
                "src",
                "127.0.0.1",
            ]
        )
        netdev = (
            f"user,id=n0,restrict=on,net={GUEST_NET},host={GUEST_GATEWAY},"
            f"dhcpstart={GUEST_ADDR},"
            f"guestfwd=tcp:{SERVICE_IP}:443-cmd:socat STDIO TCP:127.0.0.1:443,"
            f"hostfwd=tcp:{NODE_IP}:{KUBELET_PORT}-{GUEST_ADDR}:{KUBELET_PORT}"
        )
        argv = [
            *self.cluster.nsenter(mount=False),
            *vm.qemu_argv(
                image,
                memory_mb=self.memory_mb,
                overlay=overlay,
                payload=payload,
                results=results,
                network=["-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"],
            ),
        ]
        self._qemu_argv = argv
        (self.work / "console.log").write_text("")
        self._start_qemu()
        self.timings["qemu started"] = time.monotonic() - t0

    def _start_qemu(self) -> None:
        self.boots += 1
        self.boot_start = len(self.console)
        self.enforce = None
        self.proc = subprocess.Popen(
            self._qemu_argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_console, name="vm-console", daemon=True)
        self._reader.start()

    def reboot(self, timeout: float = 300, while_down: Callable[[], None] | None = None) -> None:
        """After the guest was asked to reboot (SelinuxNode.reboot): wait for it to go down (QEMU
        exits, -no-reboot), call while_down (what the cluster does while the node is off), then
        boot the same disks again. Returns once QEMU runs again; wait for MARK_UP with
        wait_console."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise NodeVMError(
                f"the guest did not go down for its reboot within {timeout:.0f} s:\n"
                f"{self.console_tail()}"
            ) from exc
        self._console_closed()
        if not any(MARK_REBOOTING in line for line in self.console[self.boot_start :]):
            raise NodeVMError(
                f"QEMU exited ({self.proc.returncode}) without the guest's reboot:\n"
                f"{self.console_tail()}"
            )
        self._boot_again(
            f"=== host: QEMU exited ({self.proc.returncode}); booting again ===", while_down
        )

    def power_cut(self, while_down: Callable[[], None] | None = None) -> None:
        """The node loses power: QEMU's process group (QEMU and its guestfwd's socat) is killed
        with SIGKILL while the guest runs: no shutdown, no sync, the guest's memory gone; what
        QEMU had written to the disk files is kept (see tests/e2e/vm.py qemu_argv()). Then
        while_down, then the same disks boot again. Returns once QEMU runs again; wait for
        MARK_UP with wait_console."""
        assert self.proc is not None and self.running(), "power_cut() of a VM that is not running"
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        self._console_closed()
        self._boot_again("=== host: power cut ===", while_down)

    def _console_closed(self) -> None:
        """After QEMU exited: let the console reader drain its pipe, then close the pipe."""
        assert self.proc is not None
        if self._reader is not None:
            self._reader.join(timeout=30)
        if self.proc.stdout is not None and not self._reader_alive():
            self.proc.stdout.close()

    def _boot_again(self, note: str, while_down: Callable[[], None] | None) -> None:
        self.console.append(note)
        with (self.work / "console.log").open("a") as out:
            out.write(note + "\n")
        if while_down is not None:
            while_down()
        self._start_qemu()

    def _read_console(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with (self.work / "console.log").open("a") as out:
            vm.follow_console(self.proc.stdout, self.console, [out], self._on_console_line)

    def _on_console_line(self, line: str) -> None:
        if MARK_ENFORCE in line:
            self.enforce = line.split(MARK_ENFORCE, 1)[1].strip()

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_console(self, marker: str, timeout: float) -> None:
        """Wait for marker in the current boot's console lines."""
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.console[self.boot_start :]):
            if not self.running():
                raise NodeVMError(f"the VM exited before {marker!r}:\n{self.console_tail()}")
            if time.monotonic() > deadline:
                raise NodeVMError(
                    f"no {marker!r} on the VM console within {timeout:.0f} s:\n"
                    f"{self.console_tail()}"
                )
            time.sleep(0.5)

    def console_tail(self, lines: int = 40) -> str:
        return "\n".join(self.console[-lines:])

    def stop(self, timeout: float = 90) -> None:
        """Wait for the guest to power off (after the init was asked to, see NodeShell.stop_node),
        kill QEMU if it does not, copy the guest's logs out, remove the disks."""
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=30)
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.proc is not None and self.proc.stdout is not None and not self._reader_alive():
            self.proc.stdout.close()  # the console pipe: its reader has seen its end
        if self._address_added:
            self.cluster.run(["ip", "addr", "del", f"{NODE_IP}/32", "dev", "lo"], check=False)
            self._address_added = False
        results = self.work / "results.img"
        if results.exists():
            vm.copy_results(results, self.work / "guest-logs")
        for disk in ("root-overlay.qcow2", "payload.img", "results.img"):
            (self.work / disk).unlink(missing_ok=True)
