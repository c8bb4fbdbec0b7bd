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
