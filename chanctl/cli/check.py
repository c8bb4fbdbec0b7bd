"""``chanctl check FILE``: every problem at once, or a summary of what the config declares."""

from __future__ import annotations

from typing import Annotated

import typer

from chanctl.cli.common import err, out
from chanctl.cli.exit_codes import ExitCode
from chanctl.config.load import load_config
from chanctl.errors import ConfigError

__all__ = ["check"]


def check(config: Annotated[str, typer.Argument(help="The YAML config to validate.")]) -> None:
    """Validate CONFIG: list every problem with file:line:column (exit 1), or summarize it (exit 0)."""
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        for problem in exc.problems:
            out(str(problem))
        errors = sum(1 for p in exc.problems if p.severity == "error")
        err(f"chanctl: {config}: {errors} error{'s' * (errors != 1)}")
        raise typer.Exit(int(ExitCode.ERROR)) from None
    for warning in loaded.warnings:
        out(str(warning))
    cfg = loaded.config
    out(f"{config}: ok — {len(cfg.topics)} topic pattern{'s' * (len(cfg.topics) != 1)}")
    for pattern, topic in cfg.topics.items():
        rule = " ".join(str(topic.join).split()) if not isinstance(topic.join, bool) else str(topic.join).lower()
        out(f"  {pattern}")
        out(f"    join: {rule}")
        for name, event in topic.events.items():
            schema = " (schema)" if event.schema_ is not None else ""
            out(f"    event {name}: {event.do}{schema}")
