"""Fetch the pinned CSI spec's csi.proto with the Go toolchain and generate Python stubs.

The spec is a dependency, not a vendored file: `go mod download` fetches the pinned module from
the Go module proxy (or the local module cache), the proto's sha256 is checked against
`pin.json`, and grpcio-tools plus mypy-protobuf write `csi_pb2.py`, `csi_pb2_grpc.py` and their
`.pyi` stubs into `<out>/csi_hostpath_selinux/_proto/`.

Usage: python csi-spec/generate.py [OUT_ROOT]   (default: the repository root, for development)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_DIR = ("csi_hostpath_selinux", "_proto")


def load_pin() -> dict[str, str]:
    with open(HERE / "pin.json", encoding="utf-8") as f:
        pin: dict[str, str] = json.load(f)
    return pin


def go_flags(inherited: str) -> str:
    """GOFLAGS for `go mod download`: the caller's flags (e.g. the Dockerfile's -modcacherw) with
    any -mod= setting replaced by -mod=mod, which a vendor or readonly setting would refuse."""
    kept = [flag for flag in inherited.split() if not flag.startswith("-mod=")]
    return " ".join([*kept, "-mod=mod"])


def fetch_proto(pin: dict[str, str]) -> bytes:
    """Return the pinned csi.proto, fetched by `go mod download`, after checking its sha256."""
    go = shutil.which("go")
    if go is None:
        raise SystemExit("generate.py: the Go toolchain ('go') is needed to fetch the CSI spec")
    ref = f"{pin['module']}@{pin['version']}"
    with tempfile.TemporaryDirectory() as tmp:
        # Run outside any module so `go mod download` does not touch a go.mod.
        env = dict(os.environ, GO111MODULE="on", GOFLAGS=go_flags(os.environ.get("GOFLAGS", "")))
        out = subprocess.run(
            [go, "mod", "download", "-json", ref],
            cwd=tmp,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    info = json.loads(out)
    if info.get("Error"):
        raise SystemExit(f"generate.py: go mod download {ref}: {info['Error']}")
    data = (Path(info["Dir"]) / pin["proto"]).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != pin["sha256"]:
        raise SystemExit(
            f"generate.py: {pin['proto']} of {ref} has sha256 {digest}, pin.json expects {pin['sha256']}"
        )
    return data


def generate(out_root: Path) -> Path:
    """Write the stubs under out_root/csi_hostpath_selinux/_proto and return that directory."""
    from grpc_tools import protoc  # noqa: PLC0415 - a build dependency, not needed to import

    pin = load_pin()
    proto = fetch_proto(pin)
    target = out_root.joinpath(*PACKAGE_DIR)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Place the proto at its package path so the generated imports are package-absolute.
        src_dir = Path(tmp).joinpath(*PACKAGE_DIR)
        src_dir.mkdir(parents=True)
        (src_dir / "csi.proto").write_bytes(proto)
        include = Path(protoc.__file__).resolve().parent / "_proto"
        plugin = shutil.which("protoc-gen-mypy")
        args = [
            "grpc_tools.protoc",
            f"-I{tmp}",
            f"-I{include}",
            f"--python_out={out_root}",
            f"--grpc_python_out={out_root}",
        ]
        if plugin is not None:
            args += [
                f"--plugin=protoc-gen-mypy={plugin}",
                f"--mypy_out={out_root}",
                f"--plugin=protoc-gen-mypy_grpc={shutil.which('protoc-gen-mypy_grpc')}",
                f"--mypy_grpc_out={out_root}",
            ]
        args.append(str(Path(*PACKAGE_DIR) / "csi.proto"))
        rc = protoc.main(args)
        if rc != 0:
            raise SystemExit(f"generate.py: protoc failed with exit code {rc}")
    (target / "__init__.py").write_text(
        f'"""Generated from {pin["module"]}@{pin["version"]} csi.proto; do not edit."""\n'
        f'SPEC_VERSION = "{pin["version"].lstrip("v")}"\n',
        encoding="utf-8",
    )
    (target / "py.typed").write_text("", encoding="utf-8")
    return target


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent
    print(f"generated CSI stubs in {generate(root.resolve())}")
