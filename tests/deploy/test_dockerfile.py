"""The Dockerfile passes hadolint and keeps its structural rules; broken copies fail both."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.deploy.deploy_support import (
    DOCKERFILE,
    DOCKERIGNORE,
    REPO,
    dockerfile_problems,
    find_tool,
)

VERSION = str(
    tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
)


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_tool("hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _ignore_text() -> str:
    return DOCKERIGNORE.read_text(encoding="utf-8")


def test_hadolint_passes() -> None:
    proc = _hadolint(DOCKERFILE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_structure() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert dockerfile_problems(text, _ignore_text(), VERSION) == []


BREAKAGES = [
    ("@sha256:", "@sha256:zz", "not pinned"),
    ("python:3.11.14-slim-bookworm@", "python:latest@", "not pinned"),
    ("        attr \\\n", "        attr \\\n        curl \\\n", "runtime packages"),
    ("        xfsprogs \\\n", "", "runtime packages"),
    ('ENTRYPOINT ["csi-hostpath-selinux"]', "ENTRYPOINT csi-hostpath-selinux", "ENTRYPOINT"),
    ('org.opencontainers.image.licenses="Apache-2.0" ', "", "OCI labels"),
    ("ARG VERSION=", "ARG VERSION=9", "ARG VERSION"),
    ("&& pip wheel", "&& pip download", "pip wheel"),
    ("FROM docker.io/library/golang:", "FROM golang:", "not fully qualified"),
    ("FROM docker.io/library/python:", "FROM python:", "not fully qualified"),
    ('    && python -c "import csi_hostpath_selinux.server" \\\n', "", "smoke test"),
    ("# csi-hostpath-selinux node plugin image.", "# syntax=docker/dockerfile:1\n#", "syntax"),
]


@pytest.mark.parametrize(("old", "new", "message"), BREAKAGES)
def test_structural_check_fails_on_broken_copy(old: str, new: str, message: str) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert old in text
    problems = dockerfile_problems(text.replace(old, new, 1), _ignore_text(), VERSION)
    assert any(message in p for p in problems), problems


def test_structural_check_fails_on_single_stage() -> None:
    single = 'FROM python:3.11-slim\nENTRYPOINT ["csi-hostpath-selinux"]\n'
    assert dockerfile_problems(single, _ignore_text(), VERSION) == [
        "the Dockerfile is not multi-stage"
    ]


def test_dockerignore_must_let_sources_in() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    ignore = _ignore_text().replace("!csi-spec/\n", "")
    assert any("csi-spec/" in p for p in dockerfile_problems(text, ignore, VERSION))


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ("WORKDIR /src\n", "WORKDIR /src\nRUN cd /tmp && ls\n", "DL3003"),
        ("USER 0:0", "USER root", "DL3066"),
        (
            "    && csi-hostpath-selinux --help > /dev/null\n",
            "    && pip install grpcio\n",
            "DL3013",
        ),
    ],
)
def test_hadolint_fails_on_broken_copy(tmp_path: Path, old: str, new: str, rule: str) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    proc = _hadolint(broken)
    assert proc.returncode != 0
    assert rule in proc.stdout
