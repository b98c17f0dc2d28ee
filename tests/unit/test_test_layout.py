"""The test suite's own bookkeeping cannot rot: the README's module-to-tests map and the [test] extra.

- README.md "Tests: where each module is tested" has one row per module of csi_hostpath_selinux/
  (the generated _proto/ aside), no row for a module that is gone, and names only test files
  that exist.
- Every third-party module that tests/ and sanity/ import comes from a distribution that the
  package's runtime dependencies or its [test] extra (pyproject.toml) list, so that
  scripts/bootstrap installs it on a fresh machine.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "csi_hostpath_selinux"
MAP_HEADING = "### Tests: where each module is tested"
ROW = re.compile(r"^\| `(?P<module>[^`]+)` \| (?P<tests>.+) \|$")


def module_map() -> dict[str, list[str]]:
    """The README's table: module path (relative to the package) -> test files."""
    text = (ROOT / "README.md").read_text()
    assert MAP_HEADING in text, f"README.md has no section {MAP_HEADING!r}"
    section = text.split(MAP_HEADING, 1)[1]
    rows: dict[str, list[str]] = {}
    in_table = False
    for line in section.splitlines():
        if line.startswith("| module |"):
            in_table = True
            continue
        if not in_table or line.startswith("|---"):
            continue
        if not line.startswith("|"):
            break
        match = ROW.match(line)
        assert match, f"a row of the module map is not `| \\`module\\` | \\`test\\`, ... |`: {line}"
        module = match["module"]
        assert module not in rows, f"{module} has two rows in the module map"
        rows[module] = re.findall(r"`([^`]+)`", match["tests"])
    return rows


def package_modules() -> set[str]:
    return {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "_proto" not in path.relative_to(PACKAGE).parts
    }


def test_every_module_has_a_row_and_every_row_a_module() -> None:
    rows = set(module_map())
    modules = package_modules()
    assert sorted(modules - rows) == [], "modules with no row in README's module-to-tests map"
    assert sorted(rows - modules) == [], "rows for modules that no longer exist"


def test_every_listed_test_file_exists() -> None:
    for module, tests in module_map().items():
        assert tests, f"{module}: no test file listed"
        for test in tests:
            assert test.startswith(("tests/", "sanity/")) and test.endswith(".py"), (module, test)
            assert (ROOT / test).is_file(), f"{module}: {test} does not exist"


def third_party_imports() -> dict[str, set[str]]:
    """Top-level names of what tests/ and sanity/ import from outside the repository."""
    files = [*ROOT.joinpath("tests").rglob("*.py"), *ROOT.joinpath("sanity").rglob("*.py")]
    local = {path.stem for path in files} | {
        "tests",
        "sanity",
        "benchmarks",
        "csi_hostpath_selinux",
    }
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in local or top == "__future__":
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def normalized(requirement: str) -> str:
    """The distribution name of a requirement string, normalized as PEP 503 does."""
    name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_test_extra_lists_what_the_tests_import() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        normalized(r) for r in [*project["dependencies"], *project["optional-dependencies"]["test"]]
    }
    installed = packages_distributions()
    missing = {}
    for module, where in sorted(third_party_imports().items()):
        dists = {normalized(d) for d in installed.get(module, [])}
        assert dists, f"{module} (imported by {sorted(where)}) is not installed"
        if not dists & declared:
            missing[module] = (sorted(dists), sorted(where))
    assert missing == {}, "imported by the tests but in neither dependencies nor [test]"
