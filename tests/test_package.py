"""Package hygiene: the public surface, and a protocol core that stays free of I/O."""

import subprocess
import sys

import chanctl
import chanctl.protocol


def test_public_names_are_exported():
    for module in (chanctl, chanctl.protocol):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_protocol_core_imports_no_io_library():
    code = (
        "import sys, chanctl.protocol\n"
        "banned = {'asyncio', 'websockets', 'textual', 'typer', 'redis', 'socket'}\n"
        "print(sorted(m for m in banned if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_command_line_starts_without_heavy_libraries():
    """`chanctl token --user 42` and `send` start in ~0.3 s: the schema, the CEL library (which
    imports its own CLI), the server and Textual load only in the commands that need them."""
    code = (
        "import sys, chanctl.cli.main\n"
        "heavy = {'cel', 'pydantic', 'jsonschema', 'textual', 'chanctl.server', 'chanctl.config.load'}\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
