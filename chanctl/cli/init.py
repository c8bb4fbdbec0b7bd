"""``chanctl init [PATH]``: write a commented starter config that passes ``check``, with a fresh secret."""

from __future__ import annotations

import secrets
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer

from chanctl.cli.common import DEFAULT_CONFIG, die, err
from chanctl.cli.exit_codes import ExitCode

__all__ = ["init"]


def init(
    path: Annotated[str, typer.Argument(help="Where to write the config.")] = DEFAULT_CONFIG,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="server.port of the new config.")] = 4000,
) -> None:
    """Write a commented starter config with a fresh random secret."""
    target = Path(path)
    if target.exists() and not force:
        die(f"{path} exists; pass --force to overwrite it", ExitCode.USAGE)
    # A secret of its own for every config: a shared default would let anyone who read the
    # template mint tokens for this server. 32 random bytes, as `openssl rand -hex 32`.
    text = files("chanctl.cli").joinpath("starter.yaml").read_text(encoding="utf-8")
    text = text.replace("__SECRET__", secrets.token_hex(32)).replace("__PORT__", str(port))
    try:
        target.write_text(text, encoding="utf-8")
        target.chmod(0o600)  # it holds the secret
    except OSError as exc:
        die(f"cannot write {path}: {exc.strerror}", ExitCode.USAGE)
    named = "" if path == DEFAULT_CONFIG else f" {path}"  # serve and check read ./chanctl.yaml by default
    err(f"wrote {path} (with a fresh secret); next: `chanctl check{named}`, then `chanctl serve{named}`")
