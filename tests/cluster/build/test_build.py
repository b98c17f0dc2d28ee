"""The cluster build's helpers: images carry the name they are imported under and the test-build
labels; the manifest lists only what exists and is written as cluster.json only when complete."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _archive_json(archive: Path, name: str) -> object:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(name)
        assert member is not None, name
        return json.load(member)


def test_binary_image_carries_its_name_entrypoint_and_test_labels(tmp_path: Path) -> None:
    for tool in ("umoci", "skopeo"):
        assert shutil.which(tool), f"{tool} is installed by scripts/install.d/70-cluster.sh"
    out = tmp_path / "img.tar"
    ref = "registry.example/test/standin:v1"
    subprocess.run(
        [HERE / "images.sh", "binary", out, ref, "/bin/busybox", "example.label=yes"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    manifest = _archive_json(out, "manifest.json")
    assert isinstance(manifest, list) and manifest[0]["RepoTags"] == [ref]
    config = _archive_json(out, manifest[0]["Config"])
    assert isinstance(config, dict)
    assert config["config"]["Entrypoint"] == ["/busybox"]
    labels = config["config"]["Labels"]
    assert labels["csi-hostpath-selinux.test-build"] == "true"
    assert labels["example.label"] == "yes"
    with tarfile.open(out) as outer:
        layer = outer.extractfile(manifest[0]["Layers"][0])
        assert layer is not None
        with tarfile.open(fileobj=io.BytesIO(layer.read())) as inner:
            binary = inner.getmember("./busybox")
            assert binary.mode & 0o111 and binary.uid == 0
            assert inner.getmember("./tmp").mode & 0o1777 == 0o1777


def _fake_archive(path: Path, ref: str) -> None:
    data = json.dumps([{"Config": "c.json", "RepoTags": [ref], "Layers": []}]).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _run_manifest(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        MODE=mode,
        CACHE=str(tmp_path),
        K8S_VERSION="v1.37.2",
        K8S_BIN=str(tmp_path / "k8s"),
        ETCD_DIR=str(tmp_path / "etcd"),
        CONTAINERD_DIR=str(tmp_path / "containerd"),
        IMAGES=str(tmp_path / "images"),
    )
    return subprocess.run(
        ["python3", HERE / "manifest.py"], env=env, capture_output=True, text=True, check=False
    )


@pytest.fixture
def partial_cache(tmp_path: Path) -> Path:
    (tmp_path / "k8s").mkdir()
    kubelet = tmp_path / "k8s" / "kubelet"
    kubelet.write_text("#!/bin/sh\n")
    kubelet.chmod(0o755)
    (tmp_path / "images").mkdir()
    _fake_archive(tmp_path / "images" / "pause.tar", "registry.k8s.io/pause:3.10.2")
    return tmp_path


def test_partial_manifest_lists_only_what_exists(partial_cache: Path) -> None:
    proc = _run_manifest(partial_cache, "partial")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((partial_cache / "cluster.partial.json").read_text())
    # runc comes from the host's PATH (Debian's package); everything else only if built.
    assert {k: v for k, v in data["bin"].items() if k != "runc"} == {
        "kubelet": str(partial_cache / "k8s" / "kubelet")
    }
    assert data["images"] == {
        "pause": {
            "archive": str(partial_cache / "images" / "pause.tar"),
            "ref": "registry.k8s.io/pause:3.10.2",
        }
    }
    assert not (partial_cache / "cluster.json").exists()


def test_final_manifest_refuses_an_incomplete_build(partial_cache: Path) -> None:
    proc = _run_manifest(partial_cache, "final")
    assert proc.returncode != 0
    assert "kube-apiserver" in proc.stderr and "driver" in proc.stderr
    assert not (partial_cache / "cluster.json").exists()
