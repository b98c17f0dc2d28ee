"""The Helm chart lints, renders valid objects and the same node plugin as the manifests."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from csi_hostpath_selinux import cli
from tests.deploy.deploy_support import (
    CHART,
    DRIVER_CONTAINER,
    REPO,
    Validator,
    container,
    find_tool,
    helm_template,
    host_view,
    load_file,
    load_yaml_docs,
    manifest_files,
    node_plugin_problems,
    only,
    render_chart,
)

ALL_ON = (
    "storageClasses.nfs.enabled=true",
    "storageClasses.cifs.enabled=true",
    "volumeSnapshotClass.enabled=true",
)


def _manifests() -> list[dict[str, Any]]:
    return [obj for path in manifest_files() for obj in load_file(path)]


def _by_key(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def test_helm_lint_strict() -> None:
    proc = subprocess.run(
        [find_tool("helm"), "lint", "--strict", str(CHART)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "values",
    [
        (),
        ALL_ON,
        ("selinux.selinuxfsMount=selinuxfs",),
        ("selinux.hostMounts=false", "metrics.enabled=false", "sidecars.snapshotter.enabled=false"),
        (
            "kubeletDir=/var/snap/microk8s/common/var/lib/kubelet",
            "driverName=example.csi.vendor.io",
        ),
    ],
    ids=["defaults", "all-kinds", "selinuxfs-mount", "minimal", "custom-paths"],
)
def test_rendered_chart_validates(values: tuple[str, ...], validator: Validator) -> None:
    objs = render_chart(CHART, *values)
    assert len(objs) >= 8
    assert validator.problems(objs) == []


def test_defaults_have_what_selinux_mounts_need() -> None:
    assert node_plugin_problems(render_chart(CHART)) == []


def test_selinuxfs_mode_mounts_it_directly_read_write() -> None:
    objs = render_chart(CHART, "selinux.selinuxfsMount=selinuxfs")
    assert node_plugin_problems(objs, selinuxfs_mount="selinuxfs") == []
    pod = only(objs, "DaemonSet")["spec"]["template"]["spec"]
    view = host_view(pod, container(pod, DRIVER_CONTAINER), "/sys/fs/selinux")
    assert view is not None
    assert (view.volume_path, view.volume_type, view.read_only) == (
        "/sys/fs/selinux",
        "Directory",
        False,
    )


def _driver_selinux_options(*values: str) -> Any:
    pod = only(render_chart(CHART, *values), "DaemonSet")["spec"]["template"]["spec"]
    assert "seLinuxOptions" not in container(pod, DRIVER_CONTAINER)["securityContext"]
    return pod.get("securityContext", {}).get("seLinuxOptions")


def test_driver_selinux_options_default_spc_t_and_are_a_value() -> None:
    """containerd with enable_selinux gives a privileged container container_t, which may not
    relabel filesystems: the default asks for spc_t for the whole pod (the sidecars too); other
    policies name their own type; {} leaves the runtime's choice."""
    assert _driver_selinux_options() == {"type": "spc_t"}
    assert _driver_selinux_options("selinux.driverSELinuxOptions.type=unconfined_container_t") == {
        "type": "unconfined_container_t"
    }
    assert _driver_selinux_options("selinux.driverSELinuxOptions=null") is None


def test_custom_kubelet_dir_moves_every_path() -> None:
    kubelet = "/var/snap/microk8s/common/var/lib/kubelet"
    objs = render_chart(CHART, f"kubeletDir={kubelet}")
    pod = only(objs, "DaemonSet")["spec"]["template"]["spec"]
    plugin = container(pod, DRIVER_CONTAINER)
    view = host_view(pod, plugin, kubelet)
    assert view is not None
    assert (view.host_path, view.propagation) == (kubelet, "Bidirectional")
    assert f"--kubelet-dir={kubelet}" in plugin["args"]
    registrar = container(pod, "node-driver-registrar")["args"]
    assert (
        f"--kubelet-registration-path={kubelet}/plugins/hostpath-selinux.csi.k8s.io/csi.sock"
        in registrar
    )


def test_chart_renders_the_same_objects_as_the_manifests() -> None:
    chart = _by_key(render_chart(CHART, *ALL_ON))
    plain = _by_key([o for o in _manifests() if o["kind"] not in {"Namespace", "Secret"}])
    assert sorted(chart) == sorted(plain)
    for key, obj in plain.items():
        rendered = chart[key]
        if key[0] == "DaemonSet":
            assert rendered["spec"]["template"]["spec"] == obj["spec"]["template"]["spec"]
            assert rendered["spec"]["updateStrategy"] == obj["spec"]["updateStrategy"]
        elif key[0] in {"CSIDriver"}:
            assert rendered["spec"] == obj["spec"]
        elif key[0] in {"ClusterRole", "Role"}:
            assert rendered["rules"] == obj["rules"]
        elif key[0] in {"ClusterRoleBinding", "RoleBinding"}:
            assert rendered["roleRef"] == obj["roleRef"]
            assert rendered["subjects"] == obj["subjects"]
        elif key[0] == "StorageClass":
            for field in ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"):
                assert rendered[field] == obj[field], (key, field)
            assert rendered.get("mountOptions") == obj.get("mountOptions"), key
        elif key[0] == "VolumeSnapshotClass":
            assert (rendered["driver"], rendered["deletionPolicy"]) == (
                obj["driver"],
                obj["deletionPolicy"],
            )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (("selinux.selinuxfsMount=bogus",), "selinuxfsMount"),
        (("imagee.tag=1",), "imagee"),
        (("storageClasses.nfs.enabled=true", "storageClasses.nfs.server="), "server"),
        (("selinux.driverSELinuxOptions.typ=spc_t",), "typ"),
    ],
)
def test_chart_rejects_bad_values(values: tuple[str, ...], message: str) -> None:
    proc = helm_template(CHART, *values)
    assert proc.returncode != 0
    assert message in proc.stderr


def _broken_chart(tmp_path: Path, old: str, new: str) -> Path:
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    template = copy / "templates" / "daemonset.yaml"
    text = template.read_text(encoding="utf-8")
    assert old in text
    template.write_text(text.replace(old, new, 1), encoding="utf-8")
    return copy


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("mountPropagation: Bidirectional", "mountPropagaton: Bidirectional"),
        (
            "containerPort: {{ .Values.healthPort }}",
            'containerPort: "{{ .Values.healthPort }}"',
        ),
        ("type: DirectoryOrCreate", "type: DirectoryOrCreat"),
    ],
    ids=["typo-field", "wrong-type", "bad-enum"],
)
def test_broken_chart_copy_fails_validation(
    tmp_path: Path, old: str, new: str, validator: Validator
) -> None:
    proc = helm_template(_broken_chart(tmp_path, old, new))
    assert proc.returncode == 0, proc.stderr  # helm renders it; only validation can tell
    assert validator.problems(load_yaml_docs(proc.stdout)) != []


def test_versions_agree() -> None:
    """One release number: package, chart appVersion, image tags of chart and manifests."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert chart["appVersion"] == version
    assert values["image"]["tag"] == version
    pod = only(_manifests(), "DaemonSet")["spec"]["template"]["spec"]
    assert container(pod, DRIVER_CONTAINER)["image"].endswith(f":{version}")


@pytest.mark.parametrize("values", [(), ("metrics.enabled=false", "logLevel=5")])
def test_driver_accepts_the_rendered_flags(values: tuple[str, ...]) -> None:
    pod = only(render_chart(CHART, *values), "DaemonSet")["spec"]["template"]["spec"]
    args = [
        a.replace("$(KUBE_NODE_NAME)", "node-1") for a in container(pod, DRIVER_CONTAINER)["args"]
    ]
    cli.parser().parse_args(args)
