"""csi-spec/generate.py keeps the GOFLAGS of its caller: the Dockerfile's build stage sets
GOFLAGS=-modcacherw so that the module cache it fills stays writable (and removable)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.deploy_support import REPO

GENERATE = REPO / "csi-spec" / "generate.py"


def _generate_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("csi_spec_generate", GENERATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("inherited", "expected"),
    [
        ("", "-mod=mod"),
        ("-modcacherw", "-modcacherw -mod=mod"),
        ("-mod=vendor -buildvcs=false", "-buildvcs=false -mod=mod"),
    ],
)
def test_go_flags_keep_the_callers_flags(inherited: str, expected: str) -> None:
    assert _generate_module().go_flags(inherited) == expected


def test_modcacherw_reaches_go_mod_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go = shutil.which("go")
    assert go is not None, "the Go toolchain is installed by scripts/install.d"
    real_cache = subprocess.run(
        [go, "env", "GOMODCACHE"], capture_output=True, text=True, check=True
    ).stdout.strip()
    generate = _generate_module()
    pin = generate.load_pin()
    # Serve the pinned module from the local cache (the package build has fetched it) into a fresh
    # module cache, as the image build's first `go mod download` does.
    monkeypatch.setenv("GOPROXY", f"file://{real_cache}/cache/download")
    monkeypatch.setenv("GONOSUMDB", "*")
    monkeypatch.setenv("GOFLAGS", "-modcacherw")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))
    try:
        generate.fetch_proto(pin)
        module_dir = tmp_path / "modcache" / f"{pin['module']}@{pin['version']}"
        # -modcacherw leaves the directories it creates writable (files stay read-only), so the
        # cache can be removed; without it they are r-x.
        mode = module_dir.stat().st_mode
        assert mode & stat.S_IWUSR, f"{module_dir} in the module cache is read-only"
    finally:
        # Without -modcacherw the cache is read-only and rmtree fails; make it removable anyway.
        for root, dirs, _files in os.walk(tmp_path):
            for d in dirs:
                (Path(root) / d).chmod(0o755)
