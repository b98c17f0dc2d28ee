"""Joining the SELinux VM to the harness's cluster, and looking at it the way an operator would.

`join()` boots the VM node (node_vm.py), waits for it to be Ready and for the driver's DaemonSet
pod on it to register the driver, and starts a node shell: a privileged, hostPID pod on the VM
node (the `kubectl debug node/...` pattern) through which the tests read the guest's
mountinfo, loop devices and kernel log with `nsenter -t 1`. `leave()` undoes all of it.
`reboot()` restarts the node with its disks kept and waits until kubelet, the node shell and the
driver are back; `power_cut()` does the same after the VM lost its power (QEMU killed).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.cluster import Cluster
from tests.cluster.deploy import DAEMONSET, DRIVER_CONTAINER, DRIVER_NAME, NAMESPACE
from tests.cluster.kube import BUSYBOX
from tests.cluster.selinux.node_vm import MARK_UP, NODE_NAME, NodeVM

SHELL_NS = "selinux-node-shell"
SHELL_POD = "shell"
#: The driver's log level on the cluster while the VM node is joined: 5 logs every CSI request
#: (secrets redacted), which is how the tests see the mount_flags kubelet sent.
DEBUG_LEVEL = "-v=5"
SHIPPED_LEVEL = "-v=2"
#: The liveness probes' failureThreshold while the VM node is joined. Under TCG on a loaded
#: 2-core machine the driver's Probe answers the livenessprobe sidecar after its 1 s timeout
#: for minutes at a time (measured: the shipped 5 x 10 s restarted the driver 7 times in 20
#: minutes, never letting it serve a mount); 60 x 10 s still restarts a driver that is gone.
TCG_FAILURE_THRESHOLD = 60


def wait(what: str, check: Any, timeout: float, diagnose: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s\n{diagnose()}")
        time.sleep(1)


@dataclass
class SelinuxNode:
    cluster: Cluster
    vm: NodeVM
    timings: dict[str, float] = field(default_factory=dict)
    _shipped_thresholds: dict[str, int] = field(default_factory=dict)

    # --- the operator's view ---------------------------------------------------------------

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> str:
        """A shell command on the node itself (the guest's root, mount and PID namespaces)."""
        return self._in_node(
            ("-m", "-u", "-i", "-n", "-p", "-r", "-w"),
            ["sh", "-c", script],
            check=check,
            timeout=timeout,
        ).stdout

    def _in_node(
        self, namespaces: tuple[str, ...], command: list[str], check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """command run by the node shell pod in the given namespaces (nsenter flags) of the
        guest's PID 1."""
        return self.cluster.kubectl(
            "-n",
            SHELL_NS,
            "exec",
            SHELL_POD,
            "--",
            "nsenter",
            "-t",
            "1",
            *namespaces,
            "--",
            *command,
            check=check,
            timeout=timeout,
        )

    def mountinfo(self) -> list[str]:
        return self.sh("cat /proc/1/mountinfo").splitlines()

    def avc_denials(self) -> list[str]:
        return [
            line for line in self.sh("dmesg").splitlines() if "avc:" in line and "denied" in line
        ]

    def driver_pod(self) -> str:
        pods = self.cluster.kubectl_json(
            "-n", NAMESPACE, "get", "pods", f"--field-selector=spec.nodeName={NODE_NAME}"
        )["items"]
        running = [
            p["metadata"]["name"] for p in pods if p["metadata"].get("deletionTimestamp") is None
        ]
        assert len(running) == 1, f"driver pods on {NODE_NAME}: {running}"
        return str(running[0])

    def driver_log(self, previous: bool = False) -> str:
        return self.cluster.kubectl(
            "-n",
            NAMESPACE,
            "logs",
            self.driver_pod(),
            "-c",
            DRIVER_CONTAINER,
            *(["--previous"] if previous else []),
            timeout=60,
        ).stdout

    def driver_ready(self) -> bool:
        pods = self.cluster.kubectl_json(
            "-n", NAMESPACE, "get", "pods", f"--field-selector=spec.nodeName={NODE_NAME}"
        )["items"]
        for p in pods:
            if p["metadata"].get("deletionTimestamp") is None:
                conds = {c["type"]: c["status"] for c in p["status"].get("conditions", [])}
                if conds.get("Ready") == "True":
                    return True
        return False

    def driver_registered(self) -> bool:
        out = self.cluster.kubectl("get", "csinode", NODE_NAME, "-o", "json", check=False)
        if out.returncode != 0:
            return False
        drivers = json.loads(out.stdout)["spec"].get("drivers") or []
        return any(d["name"] == DRIVER_NAME for d in drivers)

    def container_id(self, namespace: str, pod: str, container: str) -> str:
        """The running container's id ("" while it is not running and ready)."""
        out = self.cluster.kubectl(
            "-n", namespace, "get", "pod", pod, "-o", "json", check=False, timeout=20
        )
        if out.returncode != 0:
            return ""
        for status in json.loads(out.stdout)["status"].get("containerStatuses", []):
            if status["name"] == container and status.get("ready") and "running" in status["state"]:
                return str(status.get("containerID", ""))
        return ""

    def shell_container(self) -> str:
        return self.container_id(SHELL_NS, SHELL_POD, "shell")

    def driver_container(self) -> str:
        return self.container_id(NAMESPACE, self.driver_pod(), DRIVER_CONTAINER)

    def console_since(self, boot: int) -> list[str]:
        """The console lines of boot `boot` (1 = the first) and later."""
        starts = [i for i, line in enumerate(self.vm.console) if "NODE-BOOT: " in line]
        return self.vm.console[starts[boot - 1] :] if len(starts) >= boot else []

    def reboot(self, while_down: Callable[[], None] | None = None) -> dict[str, float]:
        """Reboot the node with its pods running (guest init: /run/node-reboot, a shutdown as for
        a reboot), call while_down while the machine is off, boot the same disks again, and wait
        until the node is Ready and the node shell and the driver run in new containers (kubelet
        restarted them itself). Returns timings."""

        def restart() -> None:
            self.sh("touch /run/node-reboot")
            self.vm.reboot(while_down=while_down)

        return self._restart("rebooted", restart)

    def power_cut(self, while_down: Callable[[], None] | None = None) -> dict[str, float]:
        """Cut the node's power with its pods running (NodeVM.power_cut: QEMU SIGKILLed, nothing
        in the guest is stopped, unmounted or synced), call while_down while the machine is off,
        boot the same disks again, and wait as reboot() does. Returns timings."""
        return self._restart("power cut", lambda: self.vm.power_cut(while_down=while_down))

    def _restart(self, what: str, restart: Callable[[], None]) -> dict[str, float]:
        t0 = time.monotonic()
        timings: dict[str, float] = {}
        shell, driver = self.shell_container(), self.driver_container()
        assert shell and driver, (shell, driver)
        restart()
        timings["guest down, QEMU started again"] = time.monotonic() - t0
        self.vm.wait_console(MARK_UP, 900)
        timings["guest up (kubelet started)"] = time.monotonic() - t0
        if self.vm.enforce != "Enforcing":
            raise AssertionError(
                f"after the {what} the node runs {self.vm.enforce}:\n{self.vm.console_tail()}"
            )
        wait(f"node {NODE_NAME} Ready after the {what}", self.node_ready, 600, self.diagnose)
        timings["node Ready"] = time.monotonic() - t0
        wait(
            "the node shell running again (a new container)",
            lambda: self.shell_container() not in ("", shell),
            600,
            self.diagnose,
        )
        timings["node shell back"] = time.monotonic() - t0

        def driver_back() -> bool:
            failed = self.driver_failure()
            if failed:
                raise AssertionError(f"after the {what} the driver {failed}")
            return self.driver_container() not in ("", driver)

        wait(
            "the driver running and Ready again (a new container)", driver_back, 900, self.diagnose
        )
        timings["driver Ready"] = time.monotonic() - t0
        wait("the driver registered (CSINode)", self.driver_registered, 300, self.diagnose)
        print(f"\nSELinux VM node {what}: {timings}", file=sys.stderr)
        return timings

    def driver_failure(self) -> str:
        """How the VM node's driver container last failed, with its log ("" if it did not): a
        driver that refuses its state directory exits (status 3) and would otherwise only show
        as a Ready that never comes."""
        pod = self.driver_pod()
        status = self.cluster.kubectl_json("-n", NAMESPACE, "get", "pod", pod)["status"]
        for container in status.get("containerStatuses", []):
            if container["name"] != DRIVER_CONTAINER:
                continue
            for state in (container.get("state", {}), container.get("lastState", {})):
                ended = state.get("terminated")
                # 137/143: killed (SIGKILL/SIGTERM); 255 (reason Unknown): the container of the
                # boot before, as kubelet reports it after the machine restarted.
                if ended and ended.get("exitCode") not in (0, 137, 143, 255):
                    log = self.cluster.kubectl(
                        "-n",
                        NAMESPACE,
                        "logs",
                        pod,
                        "-c",
                        DRIVER_CONTAINER,
                        "--previous",
                        check=False,
                        timeout=60,
                    )
                    return (
                        f"exited with status {ended.get('exitCode')} "
                        f"({ended.get('reason')}); its log:\n{log.stdout[-3000:]}"
                    )
        return ""

    def node_ready(self) -> bool:
        return self.cluster.node_ready(NODE_NAME, timeout=20)

    def diagnose(self) -> str:
        pods = self.cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        events = self.cluster.kubectl(
            "get", "events", "-A", "--sort-by=.lastTimestamp", check=False
        ).stdout
        return f"{pods}\n{events[-3000:]}\n--- VM console ---\n{self.vm.console_tail(30)}"

    # --- join and leave --------------------------------------------------------------------

    def _set_driver_level(self, level: str) -> None:
        ds = self.cluster.kubectl_json("-n", NAMESPACE, "get", "daemonset", DAEMONSET)
        containers = ds["spec"]["template"]["spec"]["containers"]
        index = next(i for i, c in enumerate(containers) if c["name"] == DRIVER_CONTAINER)
        args = containers[index]["args"]
        current = next(i for i, a in enumerate(args) if re.fullmatch(r"-v=\d+", a))
        if args[current] == level:
            return
        patch = [
            {
                "op": "replace",
                "path": f"/spec/template/spec/containers/{index}/args/{current}",
                "value": level,
            }
        ]
        self.cluster.kubectl(
            "-n", NAMESPACE, "patch", "daemonset", DAEMONSET, "--type=json", "-p", json.dumps(patch)
        )

    def _set_probe_threshold(self, threshold: int | None) -> None:
        """Sets every liveness probe's failureThreshold of the DaemonSet to `threshold`, or back
        to what the manifests ship (None)."""
        ds = self.cluster.kubectl_json("-n", NAMESPACE, "get", "daemonset", DAEMONSET)
        containers = ds["spec"]["template"]["spec"]["containers"]
        patch = []
        for i, c in enumerate(containers):
            probe = c.get("livenessProbe")
            if probe is None:
                continue
            if threshold is None:
                want = self._shipped_thresholds.get(c["name"], probe.get("failureThreshold", 3))
            else:
                self._shipped_thresholds.setdefault(c["name"], probe.get("failureThreshold", 3))
                want = threshold
            if probe.get("failureThreshold") != want:
                patch.append(
                    {
                        "op": "add",
                        "path": f"/spec/template/spec/containers/{i}/livenessProbe/failureThreshold",
                        "value": want,
                    }
                )
        if patch:
            self.cluster.kubectl(
                "-n",
                NAMESPACE,
                "patch",
                "daemonset",
                DAEMONSET,
                "--type=json",
                "-p",
                json.dumps(patch),
            )

    def _rollout(self, timeout: int) -> None:
        self.cluster.kubectl(
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            f"daemonset/{DAEMONSET}",
            f"--timeout={timeout}s",
            timeout=timeout + 30,
        )

    def join(self) -> None:
        t0 = time.monotonic()
        # The host node's driver pod rolls over to the new level while the VM boots; the VM
        # node's pod starts with it.
        self._set_driver_level(DEBUG_LEVEL)
        self._set_probe_threshold(TCG_FAILURE_THRESHOLD)
        self.vm.boot()
        self.vm.wait_console(MARK_UP, 1200)
        self.timings["guest up (images imported, kubelet started)"] = time.monotonic() - t0
        if self.vm.enforce != "Enforcing":
            raise AssertionError(
                f"the VM node runs {self.vm.enforce}, not Enforcing:\n{self.vm.console_tail()}"
            )
        wait(f"node {NODE_NAME} Ready", self.node_ready, 600, self.diagnose)
        self.timings["node Ready"] = time.monotonic() - t0
        self.cluster.kubectl("create", "namespace", SHELL_NS)
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(shell_pod()))
        wait(
            "the node shell pod Running",
            lambda: (
                self.cluster.kubectl(
                    "-n",
                    SHELL_NS,
                    "get",
                    "pod",
                    SHELL_POD,
                    "-o",
                    "jsonpath={.status.phase}",
                    check=False,
                ).stdout
                == "Running"
            ),
            600,
            self.diagnose,
        )
        wait(
            "the driver registered on the VM node (CSINode)",
            self.driver_registered,
            900,
            self.diagnose,
        )
        wait("the driver pod on the VM node Ready", self.driver_ready, 600, self.diagnose)
        self.timings["driver registered and Ready"] = time.monotonic() - t0
        print(f"\nSELinux VM node joined: {self.timings} (VM {self.vm.timings})", file=sys.stderr)

    def leave(self) -> list[str]:
        """Power the VM off, remove the node and what ran on it, restore the driver's log level.
        Returns problems found on the way (asserted by the caller)."""
        problems: list[str] = []
        if self.vm.running():
            out = self._in_node(("-m", "-r"), ["touch", "/run/node-stop"], check=False, timeout=60)
            if out.returncode != 0:
                problems.append(f"could not ask the guest to stop: {out.stderr.strip()}")
        self.vm.stop()
        down = [line for line in self.vm.console if "NODE-DOWN" in line]
        if not down:
            problems.append("the guest did not power off by itself (QEMU was killed)")
        self.cluster.kubectl("delete", "node", NODE_NAME, "--ignore-not-found", check=False)
        pods = self.cluster.kubectl_json(
            "get", "pods", "-A", f"--field-selector=spec.nodeName={NODE_NAME}"
        )["items"]
        for p in pods:
            self.cluster.kubectl(
                "-n",
                p["metadata"]["namespace"],
                "delete",
                "pod",
                p["metadata"]["name"],
                "--force",
                "--grace-period=0",
                check=False,
            )
        self.cluster.kubectl(
            "delete", "namespace", SHELL_NS, "--ignore-not-found", "--timeout=120s", check=False
        )
        self._set_driver_level(SHIPPED_LEVEL)
        self._set_probe_threshold(None)
        self._rollout(180)
        return problems


def shell_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": SHELL_POD, "namespace": SHELL_NS},
        "spec": {
            "nodeName": NODE_NAME,
            "hostPID": True,
            "hostNetwork": True,
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": "shell",
                    "image": BUSYBOX,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "100000"],
                    # Like the driver: privileged and spc_t, so it can read everything on the node.
                    "securityContext": {"privileged": True, "seLinuxOptions": {"type": "spc_t"}},
                }
            ],
        },
    }


def guest_logs(node: SelinuxNode) -> Path:
    return node.vm.work / "guest-logs"
