"""The plain manifests (deploy/kubernetes, deploy/examples) validate and do what SELinux needs."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from csi_hostpath_selinux import cli
from tests.deploy.deploy_support import (
    DRIVER_CONTAINER,
    DRIVER_NAME,
    MANIFESTS,
    Validator,
    container,
    example_files,
    load_file,
    manifest_files,
    name_of,
    node_plugin_problems,
    only,
)

ALL_FILES = manifest_files() + example_files()


def _all_manifests() -> list[dict[str, Any]]:
    return [obj for path in manifest_files() for obj in load_file(path)]


def test_there_are_files_to_validate() -> None:
    assert len(manifest_files()) >= 10
    assert len(example_files()) >= 4


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(MANIFESTS.parent)))
def test_file_validates(path: Path, validator: Validator) -> None:
    objs = load_file(path)
    assert objs, f"{path} holds no objects"
    assert validator.problems(objs) == []


def test_csidriver() -> None:
    driver = only(_all_manifests(), "CSIDriver")
    assert driver["metadata"]["name"] == DRIVER_NAME
    assert driver["spec"] == {
        "seLinuxMount": True,
        "attachRequired": False,
        "podInfoOnMount": True,
        "volumeLifecycleModes": ["Persistent", "Ephemeral"],
        "fsGroupPolicy": "File",
        "storageCapacity": True,
    }


def test_node_plugin_has_what_selinux_mounts_need() -> None:
    assert node_plugin_problems(_all_manifests()) == []


def test_sidecars_and_ports() -> None:
    pod = only(_all_manifests(), "DaemonSet")["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert names == [
        DRIVER_CONTAINER,
        "node-driver-registrar",
        "liveness-probe",
        "csi-provisioner",
        "csi-snapshotter",
    ]
    assert pod["hostNetwork"] is True
    provisioner = container(pod, "csi-provisioner")["args"]
    for flag in (
        "--node-deployment=true",
        "--strict-topology=true",
        "--immediate-topology=false",
        "--enable-capacity=true",
        "--capacity-ownerref-level=1",
    ):
        assert flag in provisioner
    env = {e["name"] for e in container(pod, "csi-provisioner")["env"]}
    assert {"NODE_NAME", "NAMESPACE", "POD_NAME"} <= env
    assert "--node-deployment=true" in container(pod, "csi-snapshotter")["args"]
    # With hostNetwork every port is a host port: they must differ.
    driver = container(pod, DRIVER_CONTAINER)
    ports = {p["name"]: p["containerPort"] for p in driver["ports"]}
    assert ports == {"healthz": 9898, "metrics": 9810}
    assert "--metrics-address=0.0.0.0:9810" in driver["args"]
    assert "--http-endpoint=127.0.0.1:9898" in container(pod, "liveness-probe")["args"]
    assert "--http-endpoint=127.0.0.1:9809" in container(pod, "node-driver-registrar")["args"]
    assert not any(a.startswith("--feature-gates") for a in provisioner)
    images = [c["image"] for c in pod["containers"]]
    assert all(":" in image and not image.endswith(":latest") for image in images)


def test_storage_classes_cover_every_kind() -> None:
    classes = {o["metadata"]["name"]: o for o in _all_manifests() if o["kind"] == "StorageClass"}
    kinds = {name: sc["parameters"]["kind"] for name, sc in classes.items()}
    assert kinds == {
        "hostpath-selinux-ext4": "image",
        "hostpath-selinux-xfs": "image",
        "hostpath-selinux-block": "image",
        "hostpath-selinux-directory": "directory",
        "hostpath-selinux-nfs": "nfs",
        "hostpath-selinux-cifs": "cifs",
    }
    for sc in classes.values():
        assert sc["provisioner"] == DRIVER_NAME
        assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert classes["hostpath-selinux-xfs"]["parameters"]["csi.storage.k8s.io/fstype"] == "xfs"
    cifs = classes["hostpath-selinux-cifs"]["parameters"]
    assert cifs["csi.storage.k8s.io/node-stage-secret-name"] == "hostpath-selinux-cifs-creds"
    snapshot_class = only(_all_manifests(), "VolumeSnapshotClass")
    assert snapshot_class["driver"] == DRIVER_NAME


def test_examples_show_labels_and_the_conflict() -> None:
    pods = [o for p in example_files() for o in load_file(p) if o["kind"] == "Pod"]
    levels = {
        o["metadata"]["name"]: o["spec"]["securityContext"]["seLinuxOptions"]["level"] for o in pods
    }
    assert levels["selinux-ext4"] == "s0:c1,c2"
    assert levels["writer-a"] != levels["writer-b"]
    conflict = [o for o in load_file(MANIFESTS.parent / "examples" / "label-conflict.yaml")]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for o in conflict
        if o["kind"] == "Pod"
        for v in o["spec"]["volumes"]
    }
    assert claims == {"shared-rwo"}


# --- the validator can fail -----------------------------------------------------------------------


def _daemonset() -> dict[str, Any]:
    return copy.deepcopy(only(_all_manifests(), "DaemonSet"))


def _typo_field(ds: dict[str, Any]) -> None:
    mount = ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][1]
    mount["mountPropagaton"] = mount.pop("mountPropagation")


def _wrong_type(ds: dict[str, Any]) -> None:
    ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9898"


def _wrong_nesting(ds: dict[str, Any]) -> None:
    ds["spec"]["template"]["spec"]["hostPath"] = {"path": "/dev"}


def _dangling_mount(ds: dict[str, Any]) -> None:
    ds["spec"]["template"]["spec"]["volumes"] = [
        v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] != "dev-dir"
    ]


def _unprivileged_bidirectional(ds: dict[str, Any]) -> None:
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = False


def _bad_quantity(ds: dict[str, Any]) -> None:
    ds["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "512MB"


def _bad_name(ds: dict[str, Any]) -> None:
    ds["metadata"]["name"] = "CSI_Node"


@pytest.mark.parametrize(
    "breakage",
    [
        _typo_field,
        _wrong_type,
        _wrong_nesting,
        _dangling_mount,
        _unprivileged_bidirectional,
        _bad_quantity,
        _bad_name,
    ],
)
def test_broken_daemonset_fails(breakage: Any, validator: Validator) -> None:
    ds = _daemonset()
    assert validator.problems([ds]) == []
    breakage(ds)
    assert validator.problems([ds]) != []


def test_broken_csidriver_and_snapshot_class_fail(validator: Validator) -> None:
    driver = copy.deepcopy(only(_all_manifests(), "CSIDriver"))
    driver["spec"]["seLinuxMount"] = "yes"
    assert any("seLinuxMount" in p for p in validator.problems([driver]))
    snap = copy.deepcopy(only(_all_manifests(), "VolumeSnapshotClass"))
    snap["deletionPolcy"] = snap.pop("deletionPolicy")
    assert validator.problems([snap]) != []
    snap = copy.deepcopy(only(_all_manifests(), "VolumeSnapshotClass"))
    snap["deletionPolicy"] = "Sometimes"
    assert validator.problems([snap]) != []
    unknown = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDrivr", "metadata": {"name": "x"}}
    assert validator.problems([unknown]) != []


def test_broken_copy_of_the_manifest_files_fails(tmp_path: Path, validator: Validator) -> None:
    """A typo in a copied file is caught when the file is read and validated like the originals."""
    copy_dir = tmp_path / "kubernetes"
    shutil.copytree(MANIFESTS, copy_dir)
    daemonset_file = copy_dir / "30-node-daemonset.yaml"
    text = daemonset_file.read_text(encoding="utf-8")
    assert "mountPropagation: Bidirectional" in text
    daemonset_file.write_text(
        text.replace("mountPropagation: Bidirectional", "mountPropagaton: Bidirectional"),
        encoding="utf-8",
    )
    problems = validator.problems(load_file(daemonset_file))
    assert any("mountPropagaton" in p for p in problems), problems


def test_removing_a_selinux_mount_is_caught() -> None:
    objs = copy.deepcopy(_all_manifests())
    ds = only(objs, "DaemonSet")
    driver = ds["spec"]["template"]["spec"]["containers"][0]
    for mount in driver["volumeMounts"]:
        if mount["mountPath"] == "/sys/fs":
            mount["readOnly"] = True
    assert any("read-only" in p for p in node_plugin_problems(objs))
    driver["volumeMounts"] = [m for m in driver["volumeMounts"] if m["mountPath"] != "/etc/selinux"]
    assert any("/etc/selinux" in p for p in node_plugin_problems(objs))
    assert name_of(ds) == "DaemonSet/csi-hostpath-selinux-node"


def test_driver_accepts_its_flags() -> None:
    """The DaemonSet's flags parse with the driver's own command line parser."""
    args = _driver_args(_all_manifests())
    parsed = cli.parser().parse_args(args)
    assert parsed.drivername == DRIVER_NAME
    cli.parser().parse_args(["doctor"])  # the README's check command
    with pytest.raises(SystemExit):
        cli.parser().parse_args([*args, "--state_dir=/tmp/x"])


def _driver_args(objs: list[dict[str, Any]]) -> list[str]:
    pod = only(objs, "DaemonSet")["spec"]["template"]["spec"]
    args = container(pod, DRIVER_CONTAINER)["args"]
    # kubelet expands $(VAR) from the container's env before starting it.
    return [a.replace("$(KUBE_NODE_NAME)", "node-1") for a in args]
