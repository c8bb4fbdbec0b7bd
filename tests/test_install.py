"""What a stranger's machine needs is what pyproject.toml declares, and CI runs what README says.

chanctl once shipped with the CEL library undeclared: CI passed only because its machine had the package
installed by hand, and a new user's first ``chanctl serve`` ended in ModuleNotFoundError.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from tests.support import ROOT

PACKAGE = ROOT / "chanctl"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _canonical(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def declared_distributions() -> dict[str, set[str]]:
    """Distribution names a user gets, by extra ('' for a plain install). The ``test`` extra is the
    suite's own and provides nothing the package may import."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {"": {_requirement_name(r) for r in project["dependencies"]}}
    for extra, requirements in project.get("optional-dependencies", {}).items():
        if extra != "test":
            declared[extra] = {_requirement_name(r) for r in requirements}
    return declared


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module, those inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in {"chanctl", "__future__"}}


def test_every_third_party_import_comes_from_a_declared_dependency():
    providers = importlib.metadata.packages_distributions()
    everything = set().union(*declared_distributions().values())
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for module in sorted(third_party_imports(path)):
            offered = {_canonical(d) for d in providers.get(module, [])}
            if not offered & everything:
                where = path.relative_to(ROOT)
                missing.append(f"{where}: imports {module!r}, provided by {sorted(offered) or 'nothing installed'}")
    assert missing == [], "undeclared in pyproject.toml:\n" + "\n".join(missing)


def test_the_walk_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef later():\n    from cel import compile\n    import yaml.loader\n")
    assert third_party_imports(module) == {"cel", "yaml"}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"```sh\n(pip install -e '\.\[test\]'[^\n]*)\n```", readme)
    assert command, "README lost its one-line test command"
    assert command.group(1) in (ROOT / ".ci" / "run").read_text()
