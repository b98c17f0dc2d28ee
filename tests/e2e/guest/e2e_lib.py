"""Helpers of the guest suite: read what the kernel says, and call the driver the way kubelet does.

This file runs inside the VM only (copied to /payload/tests), next to the installed driver.
Every reader prints what it read, so the console log shows the evidence of each assertion.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from csi_hostpath_selinux._proto import csi_pb2 as pb
from csi_hostpath_selinux._proto import csi_pb2_grpc
from csi_hostpath_selinux._proto.csi_pb2 import VolumeCapability

L1 = "system_u:object_r:container_file_t:s0:c1,c2"
L2 = "system_u:object_r:container_file_t:s0:c3,c4"
KUBELET_DIR = "/var/lib/kubelet"
DRIVER_STATE_DIR = "/var/lib/csi-hostpath-selinux"
DRIVER_SOCKET = "/run/csi/csi.sock"
DRIVER_LOG = "/results/driver.log"
NFS_SHARE = "/srv/nfs"
CIFS_SOURCE = "//127.0.0.1/share"
CIFS_SECRETS = {"username": "e2e", "password": "e2e-password"}
MiB = 1 << 20


def context_flag(label: str) -> str:
    """The mount flag kubelet adds for a label (AddSELinuxMountOption: context=%q)."""
    return f'context="{label}"'


# --- what the kernel says --------------------------------------------------------------------


def run(argv: Sequence[str], check: bool = True) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stdout}{proc.stderr}".strip()
        )
    return proc.stdout


def label_of(path: str, pid: int | None = None) -> str:
    """`stat -c %C path`, run in the mount namespace of pid when given."""
    argv = ["stat", "-c", "%C", path]
    if pid is not None:
        argv = ["nsenter", "-t", str(pid), "-m", "--", *argv]
    label = run(argv).strip()
    where = f" (mount namespace of pid {pid})" if pid is not None else ""
    print(f"label of {path}{where}: {label}")
    return label


def xattr_of(path: str) -> str:
    raw = os.getxattr(path, "security.selinux", follow_symlinks=False)
    label = raw.rstrip(b"\0").decode()
    print(f"security.selinux xattr of {path}: {label}")
    return label


def _unescape(field_text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/PID/mountinfo."""

    mount_point: str
    root: str
    mount_options: str
    fstype: str
    source: str
    super_options: str
    line: str


def mountinfo(pid: int | str = "self") -> list[MountEntry]:
    entries = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        parts = left.split()
        fstype, source, super_options = [*right.split(" ", 2), "", ""][:3]
        entries.append(
            MountEntry(
                mount_point=_unescape(parts[4]),
                root=_unescape(parts[3]),
                mount_options=parts[5],
                fstype=fstype,
                source=_unescape(source),
                super_options=super_options,
                line=line,
            )
        )
    return entries


def mounts_at(path: str, pid: int | str = "self") -> list[MountEntry]:
    found = [entry for entry in mountinfo(pid) if entry.mount_point == path]
    for entry in found:
        print(f"mountinfo at {path}: {entry.line}")
    if not found:
        print(f"mountinfo at {path}: nothing mounted")
    return found


def mounts_below(directory: str, pid: int | str = "self") -> list[MountEntry]:
    prefix = directory.rstrip("/") + "/"
    return [entry for entry in mountinfo(pid) if entry.mount_point.startswith(prefix)]


def has_context(entry: MountEntry, label: str) -> bool:
    """True when the super options carry context=label (the kernel prints it quoted)."""
    return f'context="{label}"' in entry.super_options or (
        f"context={label}" in entry.super_options
    )


def attached_loop_devices() -> list[str]:
    """Loop devices with a backing file, read from sysfs (not from the driver)."""
    found = []
    for device in sorted(Path("/sys/block").glob("loop*")):
        backing = device / "loop" / "backing_file"
        if backing.exists():
            found.append(f"/dev/{device.name} -> {backing.read_text().strip()}")
    return found


POD_TYPE = "e2e_pod_t"  # an MCS-constrained domain from image/container.cil


def as_pod(label: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run argv as a pod with label's MCS level (runcon into e2e_pod_t at that level)."""
    level = label.split(":", 3)[3]
    return subprocess.run(
        ["runcon", "-t", POD_TYPE, "-l", level, "--", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _last_denial() -> str:
    """The kernel's last AVC denial line (what SELinux refused, with both contexts)."""
    lines = [line for line in run(["dmesg"], check=False).splitlines() if "avc:  denied" in line]
    return lines[-1].split("audit: ", 1)[-1] if lines else "(no AVC denial logged)"


def _report(what: str, proc: subprocess.CompletedProcess[str]) -> bool:
    if proc.returncode == 0:
        print(f"{what}: allowed")
    else:
        print(f"{what}: denied ({proc.stderr.strip()}); kernel: {_last_denial()}")
    return proc.returncode == 0


def pod_can_read(label: str, path: str) -> bool:
    return _report(f"a pod with {label} reading {path}", as_pod(label, ["cat", path]))


def pod_can_create(label: str, directory: str) -> bool:
    path = os.path.join(directory, f"created-by-pod-{uuid.uuid4().hex[:8]}")
    what = f"a pod with {label} creating a file in {directory}"
    return _report(what, as_pod(label, ["touch", path]))


def enforcing() -> bool:
    return Path("/sys/fs/selinux/enforce").read_text().strip() == "1"


# --- the driver, called like kubelet ---------------------------------------------------------


class Driver:
    """A running driver process and gRPC stubs on its socket."""

    def __init__(
        self,
        socket: str = DRIVER_SOCKET,
        state_dir: str = DRIVER_STATE_DIR,
        log_path: str = DRIVER_LOG,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.socket = socket
        self.state_dir = state_dir
        self.log_path = log_path
        Path(socket).parent.mkdir(parents=True, exist_ok=True)
        Path(socket).unlink(missing_ok=True)
        argv = [
            *wrapper,
            "python3",
            "-m",
            "csi_hostpath_selinux",
            "--endpoint",
            f"unix://{socket}",
            "--nodeid",
            "e2e-node",
            "--state-dir",
            state_dir,
            "-v",
            "5",
        ]
        print(f"starting the driver: {' '.join(argv)}")
        self._log = open(log_path, "a")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while not Path(socket).is_socket():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(
                    f"the driver did not create {socket} (exit {self.process.returncode}); "
                    f"its log:\n{self.log_tail()}"
                )
            time.sleep(0.2)
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.identity = csi_pb2_grpc.IdentityStub(self.channel)
        self.controller = csi_pb2_grpc.ControllerStub(self.channel)
        self.node = csi_pb2_grpc.NodeStub(self.channel)
        self.name = self.identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=30).name
        print(f"driver {self.name} answers on {socket} (pid {self.process.pid})")

    @property
    def pid(self) -> int:
        """The pid whose mount namespace is the driver's (the python process itself)."""
        return _innermost_python(self.process.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"

    def stop(self) -> None:
        if getattr(self, "channel", None) is not None:
            self.channel.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _innermost_python(pid: int) -> int:
    """Follow single children (unshare, the hiding helper exec) down to the python process."""
    for _ in range(5):
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        if comm.startswith("python"):
            return pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children:
            return pid
        pid = int(children[0])
    return pid


@dataclass(frozen=True)
class Refusal:
    """The gRPC status of a refused call."""

    code: grpc.StatusCode
    details: str


def refusal(call: Callable[[], object]) -> Refusal:
    """Run call() and return the status it was refused with; fail when the driver accepts it."""
    try:
        call()
    except grpc.RpcError as exc:
        found = Refusal(code=exc.code(), details=exc.details() or "")
        print(f"driver answered {found.code.name}: {found.details}")
        return found
    raise AssertionError("the driver accepted a request it must refuse")


@dataclass
class Volume:
    """A volume as kubelet knows it: the CreateVolume answer and where it is staged/published."""

    volume_id: str
    pv_name: str
    context: dict[str, str]
    capability: VolumeCapability
    staging_path: str
    secrets: dict[str, str] = field(default_factory=dict)
    staged: bool = False
    targets: list[str] = field(default_factory=list)
    deleted: bool = False


class Kubelet:
    """Calls a driver the way kubelet's CSI volume plugin does, and undoes it all at the end."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.volumes: list[Volume] = []

    # capabilities

    def mount_capability(self, fs_type: str = "", flags: Sequence[str] = ()) -> VolumeCapability:
        return pb.VolumeCapability(
            mount=pb.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
            access_mode=pb.VolumeCapability.AccessMode(
                mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER
            ),
        )

    def block_capability(self) -> VolumeCapability:
        return pb.VolumeCapability(
            block=pb.VolumeCapability.BlockVolume(),
            access_mode=pb.VolumeCapability.AccessMode(
                mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
            ),
        )

    def with_flags(self, capability: VolumeCapability, flags: Sequence[str]) -> VolumeCapability:
        """The capability as kubelet sends it to the node: the PV's mount options + context."""
        copy = pb.VolumeCapability()
        copy.CopyFrom(capability)
        if copy.HasField("mount"):
            del copy.mount.mount_flags[:]
            copy.mount.mount_flags.extend(flags)
        return copy

    # controller

    def create(
        self,
        capability: VolumeCapability,
        parameters: dict[str, str] | None = None,
        size: int = 64 * MiB,
        secrets: dict[str, str] | None = None,
    ) -> Volume:
        pv_name = f"pvc-{uuid.uuid4()}"
        response = self.driver.controller.CreateVolume(
            pb.CreateVolumeRequest(
                name=pv_name,
                capacity_range=pb.CapacityRange(required_bytes=size),
                volume_capabilities=[capability],
                parameters=parameters or {},
                secrets=secrets or {},
            ),
            timeout=120,
        )
        volume_id = response.volume.volume_id
        digest = hashlib.sha256(volume_id.encode()).hexdigest()
        if capability.HasField("block"):
            staging = f"{KUBELET_DIR}/plugins/kubernetes.io/csi/volumeDevices/staging/{pv_name}"
        else:
            staging = (
                f"{KUBELET_DIR}/plugins/kubernetes.io/csi/{self.driver.name}/{digest}/globalmount"
            )
        volume = Volume(
            volume_id=volume_id,
            pv_name=pv_name,
            context=dict(response.volume.volume_context),
            capability=capability,
            staging_path=staging,
            secrets=dict(secrets or {}),
        )
        self.volumes.append(volume)
        print(f"created {volume_id} ({pv_name}) with parameters {dict(parameters or {})}")
        return volume

    def delete(self, volume: Volume) -> None:
        self.driver.controller.DeleteVolume(
            pb.DeleteVolumeRequest(volume_id=volume.volume_id, secrets=volume.secrets),
            timeout=120,
        )
        volume.deleted = True
        print(f"deleted {volume.volume_id}")

    # node

    def stage(self, volume: Volume, flags: Sequence[str] = ()) -> None:
        """NodeStageVolume; kubelet creates the global mount directory first (MountDevice)."""
        os.makedirs(volume.staging_path, mode=0o750, exist_ok=True)
        self.driver.node.NodeStageVolume(
            pb.NodeStageVolumeRequest(
                volume_id=volume.volume_id,
                staging_target_path=volume.staging_path,
                volume_capability=self.with_flags(volume.capability, flags),
                volume_context=volume.context,
                secrets=volume.secrets,
            ),
            timeout=120,
        )
        volume.staged = True
        print(f"staged {volume.volume_id} at {volume.staging_path} with flags {list(flags)}")

    def unstage(self, volume: Volume) -> None:
        self.driver.node.NodeUnstageVolume(
            pb.NodeUnstageVolumeRequest(
                volume_id=volume.volume_id, staging_target_path=volume.staging_path
            ),
            timeout=120,
        )
        volume.staged = False
        print(f"unstaged {volume.volume_id} from {volume.staging_path}")

    def target_for(self, volume: Volume) -> str:
        """A new pod's target path; kubelet creates its parent, the driver the target itself."""
        pod = uuid.uuid4()
        if volume.capability.HasField("block"):
            parent = (
                f"{KUBELET_DIR}/plugins/kubernetes.io/csi/volumeDevices/publish/{volume.pv_name}"
            )
            target = f"{parent}/{pod}"
        else:
            parent = f"{KUBELET_DIR}/pods/{pod}/volumes/kubernetes.io~csi/{volume.pv_name}"
            target = f"{parent}/mount"
        os.makedirs(parent, mode=0o750, exist_ok=True)
        return target

    def publish(self, volume: Volume, target: str, flags: Sequence[str] = ()) -> None:
        self.driver.node.NodePublishVolume(
            pb.NodePublishVolumeRequest(
                volume_id=volume.volume_id,
                staging_target_path=volume.staging_path,
                target_path=target,
                volume_capability=self.with_flags(volume.capability, flags),
                readonly=False,
                volume_context=volume.context,
                secrets=volume.secrets,
            ),
            timeout=120,
        )
        if target not in volume.targets:
            volume.targets.append(target)
        print(f"published {volume.volume_id} at {target} with flags {list(flags)}")

    def unpublish(self, volume: Volume, target: str) -> None:
        self.driver.node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=target),
            timeout=120,
        )
        if target in volume.targets:
            volume.targets.remove(target)
        print(f"unpublished {volume.volume_id} from {target}")

    def teardown(self, volume: Volume) -> None:
        """Unpublish every target, unstage and delete (the normal end of a volume's life)."""
        for target in list(volume.targets):
            self.unpublish(volume, target)
        if volume.staged:
            self.unstage(volume)
        if not volume.deleted:
            self.delete(volume)

    def cleanup(self) -> Iterator[str]:
        """Tear every volume down, yielding an error line for each step the driver refused."""
        for volume in reversed(self.volumes):
            try:
                self.teardown(volume)
            except grpc.RpcError as exc:
                yield f"cleanup of {volume.volume_id}: {exc.code().name}: {exc.details()}"
        self.volumes.clear()
