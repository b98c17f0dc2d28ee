"""The SELinux package is one a vendor can lift whole: no gRPC, nothing else of the driver; and the
driver maps each of its errors to the gRPC code callers got before the package had its own."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import grpc
import pytest

from csi_hostpath_selinux import selinux
from csi_hostpath_selinux.status import DOMAIN_ERRORS, status_of

PACKAGE_DIR = Path(selinux.__file__).parent
MODULES = sorted(path.stem for path in PACKAGE_DIR.glob("*.py"))
L1 = "system_u:object_r:container_file_t:s0:c15,c25"

# Run in a fresh interpreter: an import hook refuses grpc and every module of the driver outside
# the selinux package (the top-level csi_hostpath_selinux/__init__.py, which only reads the
# version, is the parent every submodule needs).
_BLOCKED_IMPORT = textwrap.dedent(
    """
    import importlib, sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top == "grpc" or top.startswith("grpc_") or top == "google":
                raise ImportError(f"the selinux package imported {name}")
            if top == "csi_hostpath_selinux" and name not in (
                "csi_hostpath_selinux", "csi_hostpath_selinux.selinux"
            ) and not name.startswith("csi_hostpath_selinux.selinux."):
                raise ImportError(f"the selinux package imported {name}")
            return None

    sys.meta_path.insert(0, Block())
    importlib.import_module(sys.argv[1])
    leaked = sorted(
        m for m in sys.modules
        if m.split(".")[0] in ("grpc", "google")
        or (m.startswith("csi_hostpath_selinux.") and not m.startswith("csi_hostpath_selinux.selinux"))
    )
    assert not leaked, leaked
    """
)


def test_the_package_has_the_modules_the_vendor_guide_names() -> None:
    assert set(MODULES) >= {"labels", "options", "policy", "probe", "verify", "errors", "split"}


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_without_grpc_or_the_rest_of_the_driver(module: str) -> None:
    name = "csi_hostpath_selinux.selinux" + ("" if module == "__init__" else f".{module}")
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT, name],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def _imports(path: Path) -> list[tuple[int, str]]:
    """(relative level, module) of every import statement in path."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((0, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_outside_the_package(module: str) -> None:
    for level, name in _imports(PACKAGE_DIR / f"{module}.py"):
        assert level <= 1, f"{module}.py imports from {'.' * level}{name}, outside the package"
        if level == 0:
            top = name.split(".")[0]
            assert top not in ("grpc", "google", "csi_hostpath_selinux"), (
                f"{module}.py imports {name}"
            )


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (selinux.InvalidMountFlags("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (selinux.LabelNotApplied("dropped"), grpc.StatusCode.INTERNAL),
        (selinux.SELinuxError("other"), grpc.StatusCode.INTERNAL),
    ],
)
def test_the_driver_maps_each_package_error_to_its_code(
    error: selinux.SELinuxError, code: grpc.StatusCode
) -> None:
    assert isinstance(error, DOMAIN_ERRORS)
    status = status_of("NodeStageVolume", error)
    assert status.code is code
    assert status.message == error.message


def test_parse_errors_reach_the_caller_as_invalid_argument() -> None:
    with pytest.raises(selinux.InvalidMountFlags) as info:
        selinux.parse_mount_flags(['context="u:r:t"'])
    status = status_of("NodeStageVolume", info.value)
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "3 field" in status.message


def test_the_wheel_ships_the_package() -> None:
    """pyproject.toml lists packages by name: a package missing there is missing from the wheel
    and the image (the VM suite and the container run the wheel, not the source tree)."""
    root = PACKAGE_DIR.parent.parent
    listed = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert "csi_hostpath_selinux.selinux" in listed
    on_disk = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "csi_hostpath_selinux").rglob("__init__.py")
    }
    assert on_disk <= set(listed), f"not in pyproject.toml: {sorted(on_disk - set(listed))}"
