"""What several commands share: the two consoles, finding the config, failing cleanly."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

import typer

from chanctl.cli.exit_codes import ExitCode
from chanctl.errors import ConfigError

if TYPE_CHECKING:
    from chanctl.config.load import LoadedConfig
    from chanctl.server.compile import CompiledConfig

__all__ = [
    "DEFAULT_CONFIG", "claim_value", "compile_or_die", "config_argument", "die", "err", "find_config", "load_or_die",
    "out", "parse_claims", "positive_seconds",
]

DEFAULT_CONFIG = "chanctl.yaml"


def out(text: str) -> None:
    """Data, for stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str) -> None:
    """Diagnostics, for stderr; a closed stderr (``chanctl serve 2>&1 | head``) is not an error."""
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def die(message: str, code: ExitCode) -> NoReturn:
    err(f"chanctl: {message}")
    raise typer.Exit(int(code))


def find_config(explicit: str | None) -> Path | None:
    """``--config FILE`` when given (it must exist), else ``./chanctl.yaml`` when present."""
    if explicit:
        path = Path(explicit)
        if not path.exists():
            die(f"config file not found: {explicit}", ExitCode.USAGE)
        return path
    default = Path(DEFAULT_CONFIG)
    return default if default.exists() else None


def config_argument(given: str | None) -> Path:
    """The CONFIG argument of ``serve`` and ``check``: the file given, else ``./chanctl.yaml``.

    A file that is not there is a usage error (exit 2), as a missing ``--config`` is; what is wrong
    inside a file that is there is a config problem (exit 1).
    """
    if given is not None:
        return find_config(given)  # type: ignore[return-value]
    default = Path(DEFAULT_CONFIG)
    if not default.exists():
        die(f"no config given and no ./{DEFAULT_CONFIG} here: pass CONFIG, or run `chanctl init`", ExitCode.USAGE)
    return default


def load_or_die(path: str | os.PathLike[str]) -> LoadedConfig:
    """Load a config; on problems print each one and exit 1 (a missing file is exit 2, earlier)."""
    # Imported here: pydantic, jsonschema and the schema cost ~0.15 s, which commands that need
    # no config (`chanctl token --user 42` with CHANCTL_SECRET, `send` with CHANCTL_URL) skip.
    from chanctl.config.load import load_config

    try:
        loaded = load_config(path)
    except ConfigError as exc:
        _refuse(path, exc)
    return loaded


def compile_or_die(loaded: LoadedConfig) -> CompiledConfig:
    """Compile a loaded config (rules, schemas, handlers); on problems exit as :func:`load_or_die`."""
    from chanctl.server.compile import compile_config

    try:
        return compile_config(loaded)
    except ConfigError as exc:
        _refuse(loaded.path, exc)


def _refuse(path: str | os.PathLike[str], exc: ConfigError) -> NoReturn:
    for problem in exc.problems:
        err(str(problem))
    die(f"{path} does not load ({len(exc.problems)} problem{'s' * (len(exc.problems) != 1)})", ExitCode.ERROR)


def claim_value(text: str) -> Any:
    """A claim as typed on the command line: numbers stay numbers, true/false/null are JSON;
    anything else is a string."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, (int, float, bool)) or value is None else text


def parse_claims(items: list[str]) -> dict[str, Any]:
    """``--claim key=value`` options (``id`` is reserved for ``--user``); exit 2 on a bad one."""
    claims: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            die(f"--claim takes key=value, got {item!r}", ExitCode.USAGE)
        if key == "id":
            die("--claim id=... is reserved; use --user", ExitCode.USAGE)
        claims[key] = claim_value(value)
    return claims


def positive_seconds(value: float | None) -> float | None:
    """``--timeout`` callback: 0, a negative number or nan would only surface later as a misleading
    "timed out" from the connection, so they are usage errors here."""
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise typer.BadParameter(f"must be a positive number of seconds, not {value}")
    return value
