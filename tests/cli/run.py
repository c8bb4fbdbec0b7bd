"""Run the ``chanctl`` CLI as a user does, in a subprocess, without blocking the test's event loop.

The servers the CLI talks to run in the test's own loop, so the CLI must be awaited, not waited on.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import CHAT
from tests.support import ROOT, SECRET, TIMEOUT

__all__ = ["Result", "chanctl", "start_chanctl", "user_args"]


@dataclass
class Result:
    code: int
    out: str
    err: str


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANCTL_")}
    return {**env, "CHANCTL_SECRET": SECRET, **(extra or {})}


async def start_chanctl(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chanctl", *args, cwd=cwd, env=_env(env),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def chanctl(*args: str, stdin: str | None = None, env: dict[str, str] | None = None, cwd: Path = ROOT,
                  timeout: float = 2 * TIMEOUT) -> Result:
    """``chanctl ARGS`` to completion; the test fails if it outlives ``timeout`` (the suite's, by default)."""
    proc = await start_chanctl(*args, env=env, cwd=cwd)
    out, err = await asyncio.wait_for(proc.communicate(None if stdin is None else stdin.encode()), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def user_args(url: str, user: str) -> list[str]:
    """Connect to ``url`` as ``user``, minting with the chat sample's secret."""
    return ["--url", url, "--user", user, "--config", str(CHAT)]
