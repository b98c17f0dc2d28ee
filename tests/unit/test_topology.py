"""The topology key: kubelet must be allowed to set it, and the pre-fix key keeps working."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from csi_hostpath_selinux.config import (
    DEFAULT_DRIVER_NAME,
    DriverConfig,
    in_kubelet_forbidden_namespace,
    legacy_topology_key_for,
    topology_key_for,
)
from csi_hostpath_selinux.volumes import segment_is_this_node

REPO = Path(__file__).resolve().parents[2]
NEW_KEY = "topology.hostpath-selinux.csi/node"
OLD_KEY = "topology.hostpath-selinux.csi.k8s.io/node"


@pytest.mark.parametrize(
    ("key", "forbidden"),
    [
        (OLD_KEY, True),
        ("k8s.io/x", True),
        ("kubernetes.io/x", True),
        ("topology.kubernetes.io/zone", True),
        ("a.b.kubernetes.io/node", True),
        (NEW_KEY, False),
        ("topology.hostpath.csi/node", False),
        ("k8s.io.example.com/node", False),
        ("notk8s.io/node", False),
        ("node", False),
    ],
)
def test_forbidden_namespace_rule(key: str, forbidden: bool) -> None:
    assert in_kubelet_forbidden_namespace(key) is forbidden


@pytest.mark.parametrize(
    "driver_name",
    [
        DEFAULT_DRIVER_NAME,
        "hostpath.csi.k8s.io",
        "storage.kubernetes.io",
        "k8s.io",
        "kubernetes.io",
        "csi.example.com",
        "local.storage.vendor.io",
    ],
)
def test_no_driver_name_yields_a_key_kubelet_may_not_set(driver_name: str) -> None:
    key = DriverConfig(node_id="n", driver_name=driver_name).topology_key
    assert not in_kubelet_forbidden_namespace(key), key
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/node", key), key


def test_the_default_key_and_its_legacy_form() -> None:
    config = DriverConfig(node_id="n")
    assert config.topology_key == NEW_KEY == topology_key_for(DEFAULT_DRIVER_NAME)
    assert (
        config.legacy_topology_keys == (OLD_KEY,) == (legacy_topology_key_for(DEFAULT_DRIVER_NAME),)
    )
    # A name outside the forbidden namespaces never changed key: nothing legacy to accept.
    assert DriverConfig(node_id="n", driver_name="csi.example.com").legacy_topology_keys == ()


def test_shipped_files_name_no_forbidden_topology_key() -> None:
    """Every topology key written in the manifests, chart and examples is one kubelet may set."""
    keys: list[tuple[str, str]] = []
    for path in sorted((REPO / "deploy").rglob("*")):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".tpl", ".txt", ".json"}:
            for key in re.findall(r"\btopology\.[a-z0-9.-]+/[a-z0-9.-]+", path.read_text()):
                keys.append((str(path.relative_to(REPO)), key))
    assert keys, "the manifests name the topology key in their comments"
    assert [k for k in keys if in_kubelet_forbidden_namespace(k[1])] == []
    assert {k for _, k in keys} == {NEW_KEY}


@pytest.mark.parametrize(
    ("segment", "matches"),
    [
        ({NEW_KEY: "n"}, True),
        ({OLD_KEY: "n"}, True),
        ({NEW_KEY: "n", OLD_KEY: "n"}, True),
        ({NEW_KEY: "n", "topology.kubernetes.io/zone": "z"}, True),
        ({NEW_KEY: "other"}, False),
        ({OLD_KEY: "other"}, False),
        ({NEW_KEY: "n", OLD_KEY: "other"}, False),
        ({"topology.kubernetes.io/zone": "z"}, False),
        ({}, False),
    ],
)
def test_requisite_segments_old_and_new_keys(segment: dict[str, str], matches: bool) -> None:
    assert segment_is_this_node(segment, DriverConfig(node_id="n")) is matches
