"""Build hook: generate the CSI stubs (csi-spec/generate.py) as part of every build."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


# The stub package is listed in pyproject.toml; it must exist before setuptools looks for it
# (a fresh clone has no generated files), and build_py fills it.
(ROOT / "csi_hostpath_selinux" / "_proto").mkdir(exist_ok=True)


class BuildWithStubs(build_py):
    """build_py that first writes the generated CSI stubs next to the package sources."""

    def run(self) -> None:
        spec = importlib.util.spec_from_file_location(
            "csi_generate", ROOT / "csi-spec" / "generate.py"
        )
        if spec is None or spec.loader is None:
            raise RuntimeError("cannot load csi-spec/generate.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        # Generated in the source tree (it is .gitignored), so wheels, sdist builds and editable
        # installs all see the same files.
        module.generate(ROOT)
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
