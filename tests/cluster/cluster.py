"""A one-node Kubernetes cluster in its own network and mount namespaces, for the tests.

Everything real: etcd, kube-apiserver (NodeRestriction on), kube-controller-manager, kube-scheduler,
kubelet, containerd + runc, CNI bridge; the binaries come from $CACHE/cluster.json (built by
scripts/install.d/70-cluster.sh). Isolation from the host:

- one network namespace: `lo` with the kubernetes service IP 10.96.0.1 (the apiserver listens on
  :443, so in-cluster clients work without kube-proxy), a veth pair carrying the node IP, the CNI
  bridge of the pods;
- one mount namespace, made private then rshared (mounts never propagate to the host), in which
  private directories are bind-mounted over /var/lib/kubelet, /var/lib/csi-hostpath-selinux,
  /var/lib/containerd, /run/containerd, /etc/cni, /opt/cni, ... and plain files over the /proc/sys
  entries kubelet writes, so the host's sysctls never change;
- cgroups under a cgroup root of its own (cgroupfs driver), removed at teardown.

Every component runs through `nsenter` into both namespaces. `stop()` kills every process in the
namespaces and cgroups, drops the namespaces (and with them every mount), detaches loop devices
backed by the cluster's files, removes the cgroups and directories, and `leftovers()` says what
(if anything) survived.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.manifest import Components, Image
from tests.cluster.pki import Pki

NODE_NAME = "csi-node"
NODE_IP = "10.200.0.1"
PEER_IP = "10.200.0.2"
SERVICE_IP = "10.96.0.1"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/24"
CGROUP_BASE = Path("/sys/fs/cgroup")
STATE_DIR = "/var/lib/csi-hostpath-selinux"

#: Host paths the cluster's components write, each replaced inside the mount namespace by a
#: private directory (a missing mount point is created on the host and removed at teardown).
PRIVATE_PATHS = (
    "/var/lib/kubelet",
    STATE_DIR,
    "/var/lib/containerd",
    "/var/lib/cni",
    "/run/containerd",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/var/log/pods",
    "/var/log/containers",
)

#: Images only Kubernetes' e2e suites use (logical names in cluster.json), imported last.
E2E_ONLY = ("e2e-", "agnhost")

#: Private paths on a tmpfs of the mount namespace (unpacked images: fast to write, gone with the
#: namespace instead of minutes of unlinking).
TMPFS_PATHS = {"/var/lib/containerd": "size=8g,mode=0711"}

#: The global (not per-network-namespace) sysctls kubelet sets at start
#: (pkg/kubelet/cm/container_manager_linux.go setupKernelTunables).
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


def host_sysctls() -> dict[str, str]:
    return {s: Path("/proc/sys", s).read_text().strip() for s in KUBELET_SYSCTLS}


def bridge_conflist(subnet: str) -> str:
    """The CNI config of a node's pod network: a cni0 bridge that is the pods' gateway, no
    masquerading, addresses from subnet (one per node)."""
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                }
            ],
        }
    )


def _ns_inode(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(line.split()[4].replace("\\040", " "))
    return points


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Cluster:
    components: Components
    root: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="csi-cluster-", dir="/var/tmp"))
    )
    cluster_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    processes: list[Process] = field(default_factory=list)
    created_dirs: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    sysctls_before: dict[str, str] = field(default_factory=host_sysctls)
    ns_dir: Path = field(init=False)
    netns: Path = field(init=False)
    mntns: Path = field(init=False)
    #: Where the components' logs are copied at stop (the cluster's own directory goes).
    keep_logs: Path | None = None
    #: Written while the cluster exists, so that a session killed before its teardown is cleaned
    #: up by the next one (`recover`).
    state_file: Path | None = None
    net_inode: int | None = None
    pid_inode: int | None = None
    init_pid: int | None = None
    init_process: subprocess.Popen[bytes] | None = None
    _importer: threading.Thread | None = None
    _import_error: BaseException | None = None
    _essential_imported: threading.Event = field(default_factory=threading.Event)
    mnt_inode: int | None = None

    def __post_init__(self) -> None:
        self.ns_dir = self.root / "ns"
        self.netns = self.ns_dir / "net"
        self.mntns = self.ns_dir / "mnt"
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cgroup_root = f"/csi-cluster-{self.cluster_id}"

    # --- running things inside ------------------------------------------------------------

    def nsenter(self, *, net: bool = True, mount: bool = True) -> list[str]:
        """The command prefix that enters the cluster: its network and mount namespaces and,
        with the mount namespace, its PID namespace (the /proc mounted there is that PID
        namespace's: a process outside it would find no /proc/self)."""
        cmd = ["nsenter"]
        if mount and self.init_pid is not None:
            cmd += ["-t", str(self.init_pid), "--pid"]
        if net:
            cmd.append(f"--net={self.netns}")
        if mount:
            cmd.append(f"--mount={self.mntns}")
        return [*cmd, "--"]

    def run(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """A command in both namespaces, its output captured."""
        proc = subprocess.run(
            [*self.nsenter(), *args],
            capture_output=True,
            timeout=timeout,
            check=False,
            input=input.decode() if input is not None else None,
            text=True,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def start_process(
        self, name: str, args: Sequence[str], env: dict[str, str] | None = None
    ) -> Process:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [*self.nsenter(), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        proc = Process(name, popen, log)
        self.processes.append(proc)
        return proc

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [
                *self.nsenter(mount=False),
                self.components.binary("kubectl"),
                f"--kubeconfig={self.admin_kubeconfig}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def kubectl_json(self, *args: str) -> dict[str, Any]:
        found = json.loads(self.kubectl(*args, "-o", "json").stdout)
        assert isinstance(found, dict), found
        return found

    # --- start ----------------------------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        self._make_namespaces()
        self._make_network()
        self._make_private_paths()
        self._make_cgroup_root()
        self.save_state()
        self.timings["namespaces"] = time.monotonic() - t0
        self._make_pki()
        self.timings["pki"] = time.monotonic() - t0
        self._start_etcd()
        self._start_containerd()
        self._start_apiserver()
        # Images are imported while the control plane comes up (kubelet needs none to register):
        # first those the driver's deployment and the scenarios use, then (in the background,
        # waited for by `wait_images`) those only the upstream e2e suites use.
        self._importer = threading.Thread(target=self._import_all, args=(t0,), name="image-import")
        self._importer.start()
        self._wait_apiserver()
        self.timings["apiserver ready"] = time.monotonic() - t0
        self._start_controllers()
        self._start_kubelet()
        self._wait_node_ready()
        self.timings["node ready"] = time.monotonic() - t0
        self.wait_images(essential_only=True)
        self.timings["cluster ready"] = time.monotonic() - t0

    def _import_all(self, t0: float) -> None:
        try:
            essential = [i for n, i in self.components.images.items() if not n.startswith(E2E_ONLY)]
            self._import_images(essential)
            self.timings["images imported"] = time.monotonic() - t0
            self._essential_imported.set()
            self._import_images(
                [i for n, i in self.components.images.items() if n.startswith(E2E_ONLY)]
            )
            self.timings["e2e images imported"] = time.monotonic() - t0
        except BaseException as e:
            self._import_error = e
        finally:
            self._essential_imported.set()

    def wait_images(self, essential_only: bool = False) -> None:
        if essential_only:
            self._essential_imported.wait()
        elif self._importer is not None:
            self._importer.join()
        if self._import_error is not None:
            raise RuntimeError(f"importing the images failed: {self._import_error}")

    def save_state(self) -> None:
        if self.state_file is not None:
            self.state_file.write_text(
                json.dumps(
                    {
                        "root": str(self.root),
                        "cluster_id": self.cluster_id,
                        "created_dirs": [str(d) for d in self.created_dirs],
                        "net_inode": self.net_inode,
                        "mnt_inode": self.mnt_inode,
                        "pid_inode": self.pid_inode,
                    }
                )
            )

    @classmethod
    def recover(cls, components: Components, state_file: Path) -> list[str]:
        """Stop what a killed session left (its state file says what), return what remains."""
        if not state_file.exists():
            return []
        state = json.loads(state_file.read_text())
        old = cls(
            components,
            root=Path(state["root"]),
            cluster_id=state["cluster_id"],
            created_dirs=[Path(d) for d in state["created_dirs"]],
            net_inode=state["net_inode"],
            mnt_inode=state["mnt_inode"],
            pid_inode=state.get("pid_inode"),
        )
        old.stop()
        state_file.unlink()
        return old.leftovers()

    def _make_namespaces(self) -> None:
        self.save_state()
        self.ns_dir.mkdir()
        # The files the namespaces are bound to must sit on a private mount.
        subprocess.run(["mount", "--bind", str(self.ns_dir), str(self.ns_dir)], check=True)
        subprocess.run(["mount", "--make-private", str(self.ns_dir)], check=True)
        self.netns.touch()
        self.mntns.touch()
        # Private first (leave every host peer group), then rshared inside: Bidirectional mount
        # propagation needs shared mounts, and they must never reach the host.
        subprocess.run(
            [
                "unshare",
                f"--net={self.netns}",
                f"--mount={self.mntns}",
                "--propagation",
                "private",
                "true",
            ],
            check=True,
        )
        self.net_inode = os.stat(self.netns).st_ino
        self.mnt_inode = os.stat(self.mntns).st_ino
        self.save_state()
        self.run(["mount", "--make-rshared", "/"])
        self._make_pid_namespace()

    def _make_pid_namespace(self) -> None:
        """A PID namespace whose PID 1 lives in the cluster's mount namespace, with its own /proc
        mounted there. Tools that reach "the host" through /proc/1 (kubelet, and the e2e suites'
        hostexec pods: nsenter --mount=/rootfs/proc/1/ns/mnt) then reach the cluster's node, not
        the real host; and killing that PID 1 kills every process of the cluster."""
        self.init_process = subprocess.Popen(
            [
                "nsenter",
                f"--net={self.netns}",
                f"--mount={self.mntns}",
                "--",
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
                "sleep",
                "infinity",
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while self.init_pid is None:
            children = Path(f"/proc/{self.init_process.pid}/task/{self.init_process.pid}/children")
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                if pids:
                    self.init_pid = int(pids[0])
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster's PID namespace did not start")
            time.sleep(0.02)
        self.pid_inode = os.stat(f"/proc/{self.init_pid}/ns/pid").st_ino
        self.save_state()
        self.run(["mount", "-t", "proc", "proc", "/proc"])

    def _make_network(self) -> None:
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{SERVICE_IP}/32", "dev", "lo"],
            ["ip", "link", "add", "node0", "type", "veth", "peer", "name", "node1"],
            ["ip", "addr", "add", f"{NODE_IP}/24", "dev", "node0"],
            ["ip", "addr", "add", f"{PEER_IP}/24", "dev", "node1"],
            ["ip", "link", "set", "node0", "up"],
            ["ip", "link", "set", "node1", "up"],
            ["ip", "route", "add", "default", "via", PEER_IP, "dev", "node0"],
        ):
            self.run(cmd)

    def private(self, path: str) -> Path:
        """The private directory that stands for a host path inside the mount namespace."""
        return self.root / "private" / path.strip("/").replace("/", "_")

    def _make_private_paths(self) -> None:
        for path in PRIVATE_PATHS:
            host = Path(path)
            missing = []
            probe = host
            while not probe.exists():
                missing.append(probe)
                probe = probe.parent
            for directory in reversed(missing):
                directory.mkdir()
                self.created_dirs.append(directory)
                self.save_state()
            self.private(path).mkdir(parents=True)
            if path in TMPFS_PATHS:
                self.run(
                    [
                        "mount",
                        "-t",
                        "tmpfs",
                        "-o",
                        TMPFS_PATHS[path],
                        "tmpfs",
                        str(self.private(path)),
                    ]
                )
            self.run(["mount", "--bind", str(self.private(path)), path])
        (self.private("/opt/cni") / "bin").mkdir()
        for plugin in self.components.cni_bin_dir.iterdir():
            (self.private("/opt/cni") / "bin" / plugin.name).symlink_to(plugin)
        (self.private("/etc/cni") / "net.d").mkdir()
        sysctl_dir = self.root / "sysctl"
        sysctl_dir.mkdir()
        for name, value in self.sysctls_before.items():
            stand_in = sysctl_dir / name.replace("/", "_")
            stand_in.write_text(value + "\n")
            self.run(["mount", "--bind", str(stand_in), f"/proc/sys/{name}"])
        # etcd's data on a tmpfs of the namespace: fsync costs nothing, nothing reaches the disk.
        (self.root / "etcd").mkdir()
        self.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(self.root / "etcd")])

    def _cgroup_dirs(self) -> list[Path]:
        dirs = []
        for hierarchy in sorted(CGROUP_BASE.iterdir()):
            if (hierarchy / "cgroup.procs").exists():
                dirs.append(hierarchy / self.cgroup_root.lstrip("/"))
        return dirs

    def _make_cgroup_root(self) -> None:
        for directory in self._cgroup_dirs():
            directory.mkdir()

    def _make_pki(self) -> None:
        sans = [f"IP:{ip}" for ip in ("127.0.0.1", SERVICE_IP, NODE_IP)] + [
            f"DNS:{n}"
            for n in (
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                NODE_NAME,
            )
        ]
        pki = Pki(self.root / "pki", sans)
        self.pki = pki
        self.apiserver_cert = pki.issue("apiserver", "/CN=kube-apiserver", "server")
        self.kubelet_serving = pki.issue("kubelet-serving", f"/CN={NODE_NAME}", "server")
        self.apiserver_kubelet_client = pki.issue(
            "apiserver-kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "client",
        )
        self.sa = pki.service_account_keys()
        server = "https://127.0.0.1:443"
        self.admin_kubeconfig = pki.kubeconfig(
            "admin", server, pki.issue("admin", "/O=system:masters/CN=cluster-admin", "client")
        )
        self.kubelet_kubeconfig = pki.kubeconfig(
            "kubelet",
            server,
            pki.issue("kubelet", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "client"),
        )
        self.cm_kubeconfig = pki.kubeconfig(
            "controller-manager",
            server,
            pki.issue("cm", "/CN=system:kube-controller-manager", "client"),
        )
        self.scheduler_kubeconfig = pki.kubeconfig(
            "scheduler", server, pki.issue("scheduler", "/CN=system:kube-scheduler", "client")
        )

    def _start_etcd(self) -> None:
        self.start_process(
            "etcd",
            [
                self.components.binary("etcd"),
                f"--data-dir={self.root / 'etcd' / 'data'}",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=default=http://127.0.0.1:2380",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self) -> None:
        p = self.pki
        self.start_process(
            "kube-apiserver",
            [
                self.components.binary("kube-apiserver"),
                "--etcd-servers=http://127.0.0.1:2379",
                "--bind-address=0.0.0.0",
                "--secure-port=443",
                f"--advertise-address={NODE_IP}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--client-ca-file={p.ca.cert}",
                f"--tls-cert-file={self.apiserver_cert.cert}",
                f"--tls-private-key-file={self.apiserver_cert.key}",
                f"--service-account-key-file={self.sa.cert}",
                f"--service-account-signing-key-file={self.sa.key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={self.apiserver_kubelet_client.cert}",
                f"--kubelet-client-key={self.apiserver_kubelet_client.key}",
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                f"--cert-dir={self.root / 'apiserver-certs'}",
                "--v=1",
            ],
        )

    def _wait(
        self, what: str, check: Callable[[], object], timeout: float, proc_names: Sequence[str] = ()
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            for p in self.processes:
                if p.name in proc_names and p.popen.poll() is not None:
                    raise RuntimeError(
                        f"{p.name} exited {p.popen.returncode} while waiting for {what}:\n"
                        + self.tail(p.name)
                    )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{what} not within {timeout:.0f} s:\n"
                    + "\n".join(self.tail(n) for n in proc_names)
                )
            time.sleep(0.2)

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return f"({name}: no log)"
        return f"--- {name} log (last {lines} lines) ---\n" + "\n".join(
            path.read_text(errors="replace").splitlines()[-lines:]
        )

    def _wait_apiserver(self) -> None:
        def ready() -> bool:
            return self.kubectl("get", "--raw=/readyz", check=False, timeout=10).returncode == 0

        self._wait("kube-apiserver /readyz", ready, 90, ("etcd", "kube-apiserver"))

    def _start_controllers(self) -> None:
        self.start_process(
            "kube-controller-manager",
            [
                self.components.binary("kube-controller-manager"),
                f"--kubeconfig={self.cm_kubeconfig}",
                f"--authentication-kubeconfig={self.cm_kubeconfig}",
                f"--authorization-kubeconfig={self.cm_kubeconfig}",
                f"--service-account-private-key-file={self.sa.key}",
                f"--root-ca-file={self.pki.ca.cert}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--cert-dir={self.root / 'cm-certs'}",
                "--v=1",
            ],
        )
        self.start_process(
            "kube-scheduler",
            [
                self.components.binary("kube-scheduler"),
                f"--kubeconfig={self.scheduler_kubeconfig}",
                f"--authentication-kubeconfig={self.scheduler_kubeconfig}",
                f"--authorization-kubeconfig={self.scheduler_kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--v=1",
            ],
        )

    def _start_containerd(self) -> None:
        config = self.root / "containerd.toml"
        config.write_text(f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
# The opt plugin would create /opt/containerd on the host; the others are unused snapshotters.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.components.images["pause"].ref}"
  # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj to the sandbox's -998.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{self.components.binary("runc")}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
""")
        (self.private("/etc/cni") / "net.d" / "10-bridge.conflist").write_text(
            bridge_conflist(POD_CIDR)
        )
        shim_dir = str(Path(self.components.binary("containerd-shim-runc-v2")).parent)
        self.start_process(
            "containerd",
            [self.components.binary("containerd"), f"--config={config}"],
            env={"PATH": f"{shim_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
        )

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run(
            [
                self.components.binary("ctr"),
                "--address",
                "/run/containerd/containerd.sock",
                "-n",
                "k8s.io",
                *args,
            ],
            timeout=timeout,
        )

    def _import_images(self, images: list[Image]) -> None:
        def up() -> bool:
            return (
                self.run(
                    [
                        self.components.binary("ctr"),
                        "--address",
                        "/run/containerd/containerd.sock",
                        "version",
                    ],
                    check=False,
                    timeout=10,
                ).returncode
                == 0
            )

        self._wait("containerd", up, 60, ("containerd",))
        # The largest first, so that two imports at a time finish together.
        archives = sorted({str(i.archive) for i in images}, key=lambda a: -os.path.getsize(a))
        # One ctr per archive, two at a time (two cores).
        pending = list(archives)
        running: list[tuple[str, subprocess.Popen[bytes]]] = []
        while pending or running:
            while pending and len(running) < 2:
                archive = pending.pop(0)
                running.append(
                    (
                        archive,
                        subprocess.Popen(
                            [
                                *self.nsenter(),
                                self.components.binary("ctr"),
                                "--address",
                                "/run/containerd/containerd.sock",
                                "-n",
                                "k8s.io",
                                "images",
                                "import",
                                archive,
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                        ),
                    )
                )
            archive, done = running.pop(0)
            _, err = done.communicate(timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"ctr images import {archive}: {err.decode().strip()}")

    def _start_kubelet(self) -> None:
        config = self.root / "kubelet.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": True},
                        "x509": {"clientCAFile": str(self.pki.ca.cert)},
                    },
                    "authorization": {"mode": "Webhook"},
                    "cgroupDriver": "cgroupfs",
                    "cgroupRoot": self.cgroup_root,
                    "failCgroupV1": False,
                    "failSwapOn": False,
                    "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
                    "tlsCertFile": str(self.kubelet_serving.cert),
                    "tlsPrivateKeyFile": str(self.kubelet_serving.key),
                    "resolvConf": "/etc/resolv.conf",
                    "serializeImagePulls": False,
                    "volumeStatsAggPeriod": "5s",
                    "evictionHard": {
                        "memory.available": "100Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "podLogsDir": "/var/log/pods",
                    "syncFrequency": "10s",
                    "fileCheckFrequency": "10s",
                }
            )
        )
        self.start_process(
            "kubelet",
            [
                self.components.binary("kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.kubelet_kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=2",
            ],
        )

    def node_ready(self, name: str, timeout: float) -> bool:
        """Whether the node's Ready condition is True (False also when kubectl fails)."""
        out = self.kubectl(
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False,
            timeout=timeout,
        )
        return out.stdout.strip() == "True"

    def _wait_node_ready(self) -> None:
        self._wait(
            f"node {NODE_NAME} Ready",
            lambda: self.node_ready(NODE_NAME, timeout=10),
            120,
            ("kubelet", "containerd", "kube-apiserver"),
        )

    # --- stop -----------------------------------------------------------------------------

    def _cluster_pids(self) -> set[int]:
        """Every process in the cluster's namespaces or cgroups (pods have network namespaces of
        their own but sit in the cluster's cgroups)."""
        found: set[int] = set()
        me = os.getpid()
        for pid in _pids():
            if pid == me:
                continue
            in_net = self.net_inode is not None and _ns_inode(pid, "net") == self.net_inode
            in_mnt = self.mnt_inode is not None and _ns_inode(pid, "mnt") == self.mnt_inode
            in_pid = self.pid_inode is not None and _ns_inode(pid, "pid") == self.pid_inode
            if in_net or in_mnt or in_pid:
                found.add(pid)
        for directory in self._cgroup_dirs():
            # kubelet removes pod cgroups while this walks them: a directory gone between
            # listing and reading is no process to stop.
            for root, _dirs, files in os.walk(directory):
                if "cgroup.procs" in files:
                    with contextlib.suppress(OSError):
                        text = (Path(root) / "cgroup.procs").read_text()
                        found.update(int(p) for p in text.split())
        return found

    def stop(self) -> None:
        t0 = time.monotonic()
        self._stop_processes()
        self.timings["stop: processes"] = time.monotonic() - t0
        # Dropping the namespaces drops every mount made in them.
        for ns in (self.mntns, self.netns):
            if ns.exists():
                subprocess.run(["umount", str(ns)], check=False, capture_output=True)
        if self.ns_dir.exists():
            subprocess.run(["umount", str(self.ns_dir)], check=False, capture_output=True)
        for loop in self._loop_devices():
            subprocess.run(["losetup", "-d", loop], check=False, capture_output=True)
        self._remove_cgroups()
        self.timings["stop: namespaces, loops, cgroups"] = time.monotonic() - t0
        if self.keep_logs is not None and self.logs.is_dir():
            shutil.rmtree(self.keep_logs, ignore_errors=True)
            shutil.copytree(self.logs, self.keep_logs)
            pod_logs = self.private("/var/log/pods")
            if pod_logs.is_dir():
                shutil.copytree(
                    pod_logs, self.keep_logs / "pods", symlinks=True, ignore_dangling_symlinks=True
                )
        if not any(m == str(self.root) or m.startswith(f"{self.root}/") for m in _mount_points()):
            shutil.rmtree(self.root, ignore_errors=True)
        self.timings["stop: files"] = time.monotonic() - t0
        for directory in reversed(self.created_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()
        if self.state_file is not None and not self.leftovers():
            self.state_file.unlink(missing_ok=True)

    def _remove_cgroups(self) -> None:
        for directory in self._cgroup_dirs():
            if directory.exists():
                for sub in sorted(
                    (d for d in directory.rglob("*") if d.is_dir()),
                    key=lambda d: len(d.parts),
                    reverse=True,
                ):
                    with contextlib.suppress(OSError):
                        sub.rmdir()
                with contextlib.suppress(OSError):
                    directory.rmdir()

    def _stop_processes(self) -> None:
        """SIGKILL for every process of the cluster, until none is left. Nothing of the cluster
        needs an orderly shutdown: its state goes with it."""
        deadline = time.monotonic() + 30
        while True:
            pids = self._cluster_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for p in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=5)
        if self.init_process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.init_process.wait(timeout=5)
        if self._importer is not None:
            self._importer.join(timeout=30)

    def loop_devices(self) -> dict[str, str]:
        """Loop devices backed by the cluster's files -> backing file. sysfs shows the path as the
        driver (in its container) saw it: below /var/lib/csi-hostpath-selinux, a directory that
        exists on this host only as the cluster's mount point (the harness made it, no one else
        can have files there), or below the cluster's root."""
        prefixes = [f"{self.root}/"]
        if Path(STATE_DIR) in self.created_dirs:
            prefixes.append(f"{STATE_DIR}/")
        found = {}
        for dev in Path("/sys/block").glob("loop*"):
            backing = dev / "loop" / "backing_file"
            with contextlib.suppress(OSError):
                path = backing.read_text().strip()
                if any(path.startswith(p) for p in prefixes):
                    found[f"/dev/{dev.name}"] = path
        return found

    def _loop_devices(self) -> list[str]:
        return sorted(self.loop_devices())

    def ns_mounts(self) -> list[str]:
        """Mount points inside the cluster's mount namespace."""
        out = self.run(["cat", "/proc/self/mountinfo"]).stdout
        return [line.split()[4] for line in out.splitlines()]

    def leftovers(self) -> list[str]:
        """What the cluster left on the host (empty after a clean stop)."""
        left = [f"process {pid}" for pid in sorted(self._cluster_pids())]
        left += [
            f"mount {m}"
            for m in _mount_points()
            if m == str(self.root) or m.startswith(f"{self.root}/")
        ]
        left += [f"loop device {d}" for d in self._loop_devices()]
        left += [f"cgroup {d}" for d in self._cgroup_dirs() if d.exists()]
        left += [f"directory {d}" for d in self.created_dirs if d.exists()]
        if self.root.exists():
            left.append(f"directory {self.root}")
        now = host_sysctls()
        left += [
            f"sysctl {k} changed {v} -> {now[k]}"
            for k, v in self.sysctls_before.items()
            if now[k] != v
        ]
        return left


@contextlib.contextmanager
def running_cluster(components: Components) -> Iterator[Cluster]:
    cluster = Cluster(components)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
