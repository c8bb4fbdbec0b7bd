"""Package hygiene: the public surface, and a protocol core that stays free of I/O."""

import ast
import subprocess
import sys

import chanctl
import chanctl.protocol


def test_public_names_are_exported():
    for module in (chanctl, chanctl.protocol):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def loaded_by(module: str, candidates: set[str]) -> list[str]:
    """Which of ``candidates`` a fresh interpreter has in sys.modules after importing ``module``."""
    code = f"import sys, {module}\nprint(sorted(m for m in {sorted(candidates)!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(result.stdout)  # the list the child printed


def test_protocol_core_imports_no_io_library():
    assert loaded_by("chanctl.protocol", {"asyncio", "websockets", "textual", "typer", "redis", "socket"}) == []


def test_the_command_line_starts_without_heavy_libraries():
    """`chanctl token --user 42` and `send` start in ~0.3 s: the schema, the CEL library (which
    imports its own CLI), the server and Textual load only in the commands that need them."""
    heavy = {"cel", "pydantic", "jsonschema", "textual", "chanctl.server", "chanctl.config.load"}
    assert loaded_by("chanctl.cli.main", heavy) == []
