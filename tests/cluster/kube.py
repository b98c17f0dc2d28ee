"""What a user does with kubectl, for the scenarios: apply objects, wait for them, read logs and
events. Every wait fails with the object, its events and the tail of kubelet's log."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from tests.cluster.cluster import Cluster

Obj = dict[str, Any]
BUSYBOX = "docker.io/library/busybox:1.37"


class Kube:
    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.ns = namespace

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        return self.cluster.kubectl("-n", self.ns, *args, check=check, input=input).stdout

    def apply(self, *objects: Obj) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(list(objects)))

    def get(self, kind: str, name: str = "") -> Obj:
        args = ["get", kind] + ([name] if name else [])
        found = json.loads(self.kubectl(*args, "-o", "json"))
        assert isinstance(found, dict), found
        return found

    def events(self, name: str = "") -> str:
        args = ["get", "events", "--sort-by=.lastTimestamp"]
        if name:
            args.append(f"--field-selector=involvedObject.name={name}")
        return self.kubectl(*args, check=False)

    def logs(self, pod: str, container: str = "") -> str:
        return self.kubectl("logs", pod, *(["-c", container] if container else []))

    def diagnose(self, name: str) -> str:
        return (
            self.kubectl("get", "pods,pvc", "-o", "wide", check=False)
            + self.cluster.kubectl("get", "pv", check=False).stdout
            + self.events()
            + self.cluster.tail("kubelet", 25)
        )

    def wait(
        self, what: str, check: Callable[[], bool], timeout: float = 90, name: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f} s\n{self.diagnose(name)}")
            time.sleep(0.5)

    def pod_phase(self, name: str) -> str:
        return self.kubectl(
            "get", "pod", name, "-o", "jsonpath={.status.phase}", check=False
        ).strip()

    def wait_pod(self, name: str, phase: str = "Succeeded", timeout: float = 120) -> None:
        def done() -> bool:
            current = self.pod_phase(name)
            if current == "Failed" and phase != "Failed":
                raise AssertionError(
                    f"pod {name} failed:\n{self.logs(name)}\n{self.diagnose(name)}"
                )
            return current == phase

        self.wait(f"pod {name} {phase}", done, timeout, name)

    def wait_ready(self, name: str, timeout: float = 120) -> None:
        self.wait_pod(name, "Running", timeout)
        self.kubectl("wait", "--for=condition=Ready", f"pod/{name}", f"--timeout={int(timeout)}s")

    def exec(self, pod: str, *command: str) -> str:
        return self.kubectl("exec", pod, "--", *command)

    def delete(self, *refs: str, wait: bool = True) -> None:
        self.kubectl("delete", "--ignore-not-found", f"--wait={str(wait).lower()}", *refs)


@contextmanager
def namespace(cluster: Cluster, prefix: str) -> Iterator[Kube]:
    """A namespace of its own per test; deleted, with everything in it, when the test ends."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    # The default ServiceAccount is created by a controller; pods are refused until it exists.
    kube = Kube(cluster, name)
    kube.wait(
        "default ServiceAccount",
        lambda: kube.kubectl("get", "serviceaccount", "default", check=False) != "",
        30,
    )
    try:
        yield kube
    finally:
        # Not waited for: the next test runs while it goes (the tests that promise a clean node
        # check their own volumes), and the cluster's teardown removes whatever is left.
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def pvc(
    name: str,
    storage_class: str,
    size: str = "64Mi",
    block: bool = False,
    source: Obj | None = None,
    access: str = "ReadWriteOnce",
) -> Obj:
    spec: Obj = {
        "accessModes": [access],
        "storageClassName": storage_class,
        "resources": {"requests": {"storage": size}},
    }
    if block:
        spec["volumeMode"] = "Block"
    if source:
        spec["dataSource"] = source
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": spec,
    }


def pod(
    name: str,
    script: str,
    claim: str = "",
    block: bool = False,
    restart: str = "Never",
    volumes: list[Obj] | None = None,
    mounts: list[Obj] | None = None,
) -> Obj:
    container: Obj = {
        "name": "app",
        "image": BUSYBOX,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
    }
    vols = list(volumes or [])
    mts = list(mounts or [])
    if claim:
        vols.append({"name": "data", "persistentVolumeClaim": {"claimName": claim}})
        if block:
            container["volumeDevices"] = [{"name": "data", "devicePath": "/dev/data"}]
        else:
            mts.append({"name": "data", "mountPath": "/data"})
    if mts:
        container["volumeMounts"] = mts
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
            "volumes": vols,
        },
    }
