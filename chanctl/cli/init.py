"""``chanctl init [PATH]``: write a commented starter config that passes ``check``."""

from __future__ import annotations

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
) -> None:
    """Write a commented starter config."""
    target = Path(path)
    if target.exists() and not force:
        die(f"{path} exists; pass --force to overwrite it", ExitCode.USAGE)
    try:
        target.write_text(files("chanctl.cli").joinpath("starter.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    except OSError as exc:
        die(f"cannot write {path}: {exc.strerror}", ExitCode.USAGE)
    err(f"wrote {path}; next: `chanctl check {path}`, then `chanctl serve {path}`")
