"""The layering is checked, not only intended: the import contracts, ruff, and no private imports.

The contracts live in pyproject.toml (``[tool.importlinter]``; ARCHITECTURE.md explains them) and
.ci/run runs ``lint-imports`` and ``ruff check`` too; running them here puts them under the
README's test command as well.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

PACKAGE = ROOT / "chanctl"


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_the_import_contracts_are_kept():
    # lint-imports' own module is importlinter.cli; its exit code says whether every contract was kept.
    result = subprocess.run(
        [sys.executable, "-c", "import sys, importlinter.cli as c; sys.exit(c.lint_imports_command())"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_passes():
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(path: Path) -> list[str]:
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    return [f"{path.relative_to(ROOT)}:{hit}" for hit in private_names(path.read_text(encoding="utf-8"), here, package)]


def private_names(source: str, here: str, package: str) -> list[str]:
    """Private names the module ``here`` reaches in other modules: ``from chanctl.x import _y``,
    ``import chanctl.x._y``, ``from chanctl._x import y`` and ``y._z`` attribute reads of a name
    imported from chanctl. A module's own privates, and its package's private modules (testing
    imports testing._harness), are its own business."""

    def foreign(target: str) -> bool:
        parts = target.split(".")
        first = next((i for i, part in enumerate(parts) if _private(part)), None)
        return first is not None and ".".join(parts[:first]) not in (here, package)

    tree = ast.parse(source)
    found = []
    bound: dict[str, str] = {}  # local name -> the chanctl module or object it names
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("chanctl"):
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if foreign(target):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                bound[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("chanctl"):
                    if foreign(alias.name):
                        found.append(f"{node.lineno}: import {alias.name}")
                    bound[alias.asname or "chanctl"] = alias.name if alias.asname else "chanctl"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            if foreign(f"{bound[node.value.id]}.{node.attr}"):
                found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return sorted(found, key=lambda hit: int(hit.partition(":")[0]))


def test_no_module_imports_a_private_name_of_another():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in private_imports(path)]
    assert found == []


def test_the_private_import_check_sees_every_spelling():
    source = (
        "from chanctl.protocol.serializers import _binary, V2Json\n"
        "import chanctl.rules as r\n"
        "import chanctl.testing._harness\n"
        "from chanctl.testing import _plugin\n"
        "from chanctl.protocol import _own\n"
        "r._cache, V2Json._decode_binary\n"
    )
    assert private_names(source, "chanctl.protocol", "chanctl.protocol") == [
        "1: from chanctl.protocol.serializers import _binary",
        "3: import chanctl.testing._harness",
        "4: from chanctl.testing import _plugin",
        "6: r._cache",
        "6: V2Json._decode_binary",
    ]
    # Its own package's private modules are the package's business.
    assert private_names("from chanctl.testing._harness import ChannelHarness\n", "chanctl.testing", "chanctl.testing") == []
