"""A new user's first minutes, as typed: in an empty folder, ``chanctl init``, then ``chanctl serve
chanctl.yaml`` (or a bare ``chanctl serve``), ``chanctl token --user 42``, ``chanctl watch`` and
``chanctl send room:42 new_msg``, with no other flags and no environment (STYLE.md §3).

The only addition is ``init --port``: the test cannot own port 4000 on a shared machine.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import yaml

from chanctl.tokens import TokenSigner
from tests.cli.run import Result, chanctl, start_chanctl
from tests.support import TIMEOUT

NO_ENV = {"CHANCTL_SECRET": ""}
"""The user's shell has no CHANCTL_* variables; the suite's default secret is taken away too."""


async def typed(folder: Path, *args: str) -> Result:
    result = await chanctl(*args, cwd=folder, env=NO_ENV)
    assert "Traceback" not in result.err, result.err
    return result


async def start(folder: Path, *args: str) -> asyncio.subprocess.Process:
    return await start_chanctl(*args, cwd=folder, env=NO_ENV)


async def serving(folder: Path, *args: str) -> asyncio.subprocess.Process:
    """``chanctl serve ...`` once its banner is out (the banner ends with the auth line)."""
    proc = await start(folder, "serve", *args)
    assert proc.stderr is not None
    banner = b""
    async with asyncio.timeout(3 * TIMEOUT):
        while b"  auth:" not in banner:
            line = await proc.stderr.readline()
            assert line, banner.decode()
            banner += line
    assert b"chanctl serving chanctl.yaml at ws://127.0.0.1:" in banner
    assert b"WARNING" not in banner  # init's secret is fresh and long
    return proc


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 0


def watch_in_a_terminal(folder: Path, expected: list[bytes]) -> tuple[int, bytes]:
    """``chanctl watch`` on a 100x30 pseudo-terminal: wait until the screen shows every ``expected``
    text, press q, and return the exit code and what was drawn."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANCTL_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "chanctl", "watch"], stdin=slave, stdout=slave, stderr=slave, cwd=folder,
        env={**env, "TERM": "xterm-256color"}, start_new_session=True,
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + 3 * TIMEOUT
    try:
        while not all(text in screen for text in expected) and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if ready:
                try:
                    screen += os.read(master, 65536)
                except OSError:  # the terminal closed: watch exited
                    break
        os.write(master, b"q")
        return proc.wait(TIMEOUT), screen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


async def test_the_four_commands_work_as_typed_in_an_empty_folder(tmp_path, unused_tcp_port):
    folder = tmp_path
    init = await typed(folder, "init", "--port", str(unused_tcp_port))
    assert init.code == 0 and (folder / "chanctl.yaml").exists(), init.err
    secret = yaml.safe_load((folder / "chanctl.yaml").read_text())["auth"]["secret"]

    check = await typed(folder, "check")
    assert check.code == 0, check.out + check.err
    assert "warning" not in check.out and "policy tests: 3 passed" in check.out

    server = await serving(folder, "chanctl.yaml")
    try:
        token = await typed(folder, "token", "--user", "42")
        assert token.code == 0, token.err
        assert token.out.count("\n") == 1
        claims = TokenSigner(secret.split(":-", 1)[1].rstrip("}")).verify(token.out.strip()).claims
        assert claims == {"id": 42}

        listener = await start(folder, "listen", "room:42", "--user", "7", "--json")
        assert listener.stdout is not None
        joined = await asyncio.wait_for(listener.stdout.readline(), TIMEOUT)
        assert b'"joins":{"7"' in joined

        # The operator (the secret is in ./chanctl.yaml) broadcasts server-side; payload {}.
        send = await typed(folder, "send", "room:42", "new_msg")
        assert (send.code, send.out) == (0, 'ok {"subscribers":1}\n'), send.err
        assert "as the operator" in send.err
        got = await asyncio.wait_for(listener.stdout.readline(), TIMEOUT)
        assert b'"event":"new_msg","payload":{}' in got

        code, screen = await asyncio.to_thread(watch_in_a_terminal, folder, [b"live", b"room:42"])
        assert code == 0, screen.decode(errors="replace")[-2000:]
        listener.send_signal(signal.SIGTERM)
        await asyncio.wait_for(listener.communicate(), TIMEOUT)
    finally:
        await stop(server)

    bare = await serving(folder)  # a bare `chanctl serve` reads ./chanctl.yaml
    await stop(bare)


def test_init_writes_a_fresh_secret_each_time(tmp_path):
    secrets = set()
    for name in ("a.yaml", "b.yaml"):
        subprocess.run([sys.executable, "-m", "chanctl", "init", name], cwd=tmp_path, check=True, capture_output=True)
        secret = yaml.safe_load((tmp_path / name).read_text())["auth"]["secret"]
        secrets.add(secret)
        assert len(secret.split(":-", 1)[1].rstrip("}")) == 64  # 32 random bytes, hex
    assert len(secrets) == 2
