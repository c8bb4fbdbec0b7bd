from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from chanctl.config.load import LoadedConfig, load_config, load_config_text
from chanctl.server.runtime import ChannelServer, build_server
from chanctl.tokens import TokenSigner
from tests.support import ROOT, SECRET, TIMEOUT, RedisServer, require_redis

CHAT = ROOT / "sample_configs" / "chat.yaml"


@pytest.fixture
def chat_config() -> LoadedConfig:
    """The seed's chat sample, with the test secret."""
    return load_config(CHAT, env={"CHANCTL_SECRET": SECRET})


@pytest.fixture
def mint() -> Callable[..., str]:
    """``mint(user_id, **claims)``: a token the test servers accept."""
    signer = TokenSigner(SECRET)
    return lambda user, **claims: signer.mint(user, claims)


@pytest.fixture
async def chat_server(chat_config: LoadedConfig) -> AsyncIterator[ChannelServer]:
    """The chat sample, served in process on 127.0.0.1 with a free port."""
    async with build_server(chat_config, host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
def make_server() -> Callable[..., object]:
    """``async with make_server(yaml_text) as server``: a server from inline YAML, on a free port."""

    def make(text: str, env: dict[str, str] | None = None) -> ChannelServer:
        loaded = load_config_text(text, "<test>", {"CHANCTL_SECRET": SECRET, **(env or {})})
        return build_server(loaded, host="127.0.0.1", port=0)

    return make


class ServeProcess:
    """``chanctl serve`` as a user runs it, in a subprocess."""

    def __init__(self, proc: subprocess.Popen[str], url: str, banner: list[str]):
        self.proc = proc
        self.url = url
        self.banner = banner
        """Every line of its stderr so far, the banner first."""
        self.log_ended = threading.Event()
        """Set once its stderr is closed (every process writing it has exited) and read to the end."""

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        self.banner.extend(self.proc.stderr)
        self.log_ended.set()


@pytest.fixture
def serve_process() -> Iterator[Callable[..., ServeProcess]]:
    procs: list[subprocess.Popen[str]] = []

    def start(config: Path | str = CHAT, *args: str, env: dict[str, str] | None = None) -> ServeProcess:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chanctl", "serve", str(config), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "CHANCTL_SECRET": SECRET, **(env or {})},
        )
        procs.append(proc)
        banner: list[str] = []
        assert proc.stderr is not None
        while True:  # the banner's first line carries the real URL once the port is bound
            line = proc.stderr.readline()
            if not line:
                raise AssertionError("chanctl serve exited:\n" + "".join(banner) + proc.stderr.read())
            banner.append(line)
            if " at ws://" in line:
                url = line.split(" at ", 1)[1].split()[0]
                # The banner goes on to its topics and auth line; read up to it so that tests see it.
                while not line.startswith("  auth:"):
                    line = proc.stderr.readline()
                    if not line:
                        raise AssertionError("chanctl serve exited:\n" + "".join(banner))
                    banner.append(line)
                served = ServeProcess(proc, url, banner)
                # Keep reading stderr so that a chatty server never blocks on a full pipe.
                threading.Thread(target=served._read_log, daemon=True).start()
                return served

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh ``redis-server`` for this test (fails in CI when it is not installed)."""
    server = RedisServer(require_redis())
    server.start()
    try:
        yield server
    finally:
        server.stop()
