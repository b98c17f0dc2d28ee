"""Build the Go reference driver's `cmd/hostpathplugin` at a pinned version, outside the repo.

The reference module's go.mod has `replace` directives, so `go install pkg@version` refuses to
build it. Instead this script:

1. downloads the module with `go mod download -json MODULE@VERSION` (Go module proxy),
2. reads its replace directives with `go mod edit -json` on the downloaded go.mod,
3. writes a throwaway wrapper module into a temporary directory whose go.mod requires the module
   and repeats those replace lines (relative-path replacements are made absolute),
4. runs `go build` there and puts the binary in the cache directory.

Nothing of theirs, and no generated wrapper, is written inside the repository.

    python -m benchmarks.reference.build [--version v1.17.0] [--cache-dir DIR]

prints the binary's path; exits 2 when the module cannot be fetched (the reason is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODULE = "github.com/kubernetes-csi/csi-driver-host-path"
PACKAGE = "cmd/hostpathplugin"
#: The pinned reference version (the newest release when this harness was written).
VERSION = "v1.17.1"
CACHE_DIR = Path("/var/cache/csi-hostpath-selinux-bench")


class BuildError(RuntimeError):
    """The reference driver could not be fetched or built; the message says why."""


@dataclass(frozen=True)
class Replace:
    old_path: str
    old_version: str
    new_path: str
    new_version: str

    def line(self, module_dir: Path) -> str:
        old = f"{self.old_path} {self.old_version}".strip()
        new_path = self.new_path
        if not self.new_version and (new_path.startswith("./") or new_path.startswith("../")):
            # A directory inside the downloaded module: point at it by absolute path.
            new_path = str((module_dir / new_path).resolve())
        new = f"{new_path} {self.new_version}".strip()
        return f"replace {old} => {new}"


def binary_path(version: str = VERSION, cache_dir: Path = CACHE_DIR) -> Path:
    return cache_dir / version / "hostpathplugin"


def _go(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["go", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BuildError(f"go {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return proc.stdout


def download(module: str, version: str) -> tuple[Path, Path]:
    """Fetch module@version; returns (its directory, its go.mod)."""
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise BuildError(f"go mod download printed no JSON: {proc.stderr.strip()}") from exc
    if info.get("Error"):
        raise BuildError(f"the Go module proxy did not give {module}@{version}: {info['Error']}")
    return Path(info["Dir"]), Path(info["GoMod"])


def read_go_mod(go_mod: Path) -> tuple[str, list[Replace]]:
    """The module's `go` version and its replace directives."""
    parsed = json.loads(_go(["mod", "edit", "-json", str(go_mod)]))
    replaces = [
        Replace(
            r["Old"]["Path"],
            r["Old"].get("Version", ""),
            r["New"]["Path"],
            r["New"].get("Version", ""),
        )
        for r in parsed.get("Replace") or []
    ]
    return str(parsed.get("Go") or "1.22"), replaces


def wrapper_go_mod(
    module: str, version: str, go_version: str, replaces: list[Replace], module_dir: Path
) -> str:
    lines = [
        "// Throwaway wrapper written by benchmarks/reference/build.py; never committed.",
        "module csi-hostpath-selinux-bench/reference",
        "",
        f"go {go_version}",
        "",
        f"require {module} {version}",
        "",
    ]
    lines += [r.line(module_dir) for r in replaces]
    return "\n".join(lines) + "\n"


def build(
    version: str = VERSION,
    cache_dir: Path = CACHE_DIR,
    module: str = MODULE,
    package: str = PACKAGE,
    force: bool = False,
) -> Path:
    out = binary_path(version, cache_dir)
    if out.exists() and not force:
        return out
    module_dir, go_mod = download(module, version)
    go_version, replaces = read_go_mod(go_mod)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hostpath-wrapper-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(
            wrapper_go_mod(module, version, go_version, replaces, module_dir), encoding="utf-8"
        )
        env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0")
        _go(["build", "-o", str(out), f"{module}/{package}"], cwd=work, env=env)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default=VERSION, help=f"module version (default {VERSION})")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where binaries go")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    try:
        print(build(args.version, args.cache_dir, force=args.force))
    except BuildError as exc:
        print(f"cannot build the reference driver: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
