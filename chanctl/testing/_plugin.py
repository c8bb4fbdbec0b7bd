"""The pytest plugin (entry point ``pytest11: chanctl``): fixtures, the ``chanctl`` marker, the ini option.

- ``chanctl_channels``: a :class:`~chanctl.testing.ChannelHarness` on the test's config; at teardown
  it fails the test if a push or broadcast arrived that the test never asserted (unless the test
  already failed: one failure is enough to read).
- ``chanctl_server``: opt-in, the same config served for real on 127.0.0.1 with a free port.
- ``chanctl_config``: the compiled config both use (what ``chanctl serve`` would run).

The config comes from ``@pytest.mark.chanctl(config=...)`` or the ``chanctl_config`` ini option,
relative to the rootdir. Marker keyword arguments on the module, class and function merge, the
closest winning.

An async test that asks for one of these fixtures (or carries the ``chanctl`` marker) runs on
pytest-asyncio whatever the project's ``asyncio_mode``: in its default ``strict`` mode such a test
would otherwise not run at all ("async def functions are not natively supported").
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from chanctl.config.load import load_config
from chanctl.errors import ConfigError
from chanctl.server.compile import CompiledConfig, compile_config
from chanctl.server.runtime import ChannelServer, build_server
from chanctl.testing._harness import ChannelHarness, describe

MARKER_OPTIONS = {
    "config": "path of the chanctl YAML, relative to the rootdir (default: the chanctl_config ini option)",
    "env": "variables for the config's ${VAR} substitutions, over os.environ",
    "strict_pushes": "fail at teardown on pushes and broadcasts the test never asserted (default True)",
}
_FAILED = pytest.StashKey[bool]()
FIXTURES = frozenset({"chanctl_channels", "chanctl_server", "chanctl_config"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("chanctl_config", "default chanctl YAML for the chanctl_channels fixture, relative to the rootdir")


def pytest_configure(config: pytest.Config) -> None:
    options = ", ".join(f"{name}=" for name in MARKER_OPTIONS)
    config.addinivalue_line("markers", f"chanctl({options}): configure the chanctl_channels fixture")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Module | pytest.Class, name: str, obj: object) -> None:
    """Give the asyncio marker to an async test that uses this plugin, before pytest-asyncio looks
    for it, so that a project needs no ``asyncio_mode = auto`` (pytest-asyncio's default is strict)."""
    if not inspect.iscoroutinefunction(obj) or not collector.istestfunction(obj, name):
        return
    marks = getattr(obj, "pytestmark", [])
    if any(mark.name == "asyncio" for mark in marks):
        return
    uses_plugin = (
        not FIXTURES.isdisjoint(inspect.signature(obj).parameters)
        or any(mark.name == "chanctl" for mark in marks)
        or collector.get_closest_marker("chanctl") is not None
    )
    if uses_plugin:
        pytest.mark.asyncio(obj)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("chanctl"))):  # farthest first, closest wins
        unknown = sorted(set(marker.kwargs) - set(MARKER_OPTIONS))
        if unknown or marker.args:
            known = "\n".join(f"  {name}: {text}" for name, text in MARKER_OPTIONS.items())
            what = f"unknown option {', '.join(unknown)}" if unknown else "positional arguments"
            pytest.fail(f"@pytest.mark.chanctl: {what}; it takes keywords:\n{known}", pytrace=False)
        options.update(marker.kwargs)
    return options


@pytest.fixture
def chanctl_config(request: pytest.FixtureRequest) -> CompiledConfig:
    """The config of this test: the marker's ``config`` or the ``chanctl_config`` ini option."""
    options = _options(request)
    path = options.get("config") or request.config.getini("chanctl_config")
    if not path:
        pytest.fail(
            "chanctl_channels needs a config: @pytest.mark.chanctl(config=\"chanctl.yaml\") "
            "or `chanctl_config = chanctl.yaml` under [pytest] in your ini file", pytrace=False,
        )
    env = {**os.environ, **options.get("env", {})}
    try:
        return compile_config(load_config(Path(request.config.rootpath, path), env))
    except ConfigError as exc:
        pytest.fail(f"chanctl config {path}:\n{exc}", pytrace=False)


@pytest_asyncio.fixture
async def chanctl_channels(request: pytest.FixtureRequest, chanctl_config: CompiledConfig) -> AsyncIterator[ChannelHarness]:
    """The in-process harness; ``chanctl_channels.connect(user_id)`` plays a client."""
    strict = _options(request).get("strict_pushes", True)
    async with ChannelHarness(chanctl_config) as channels:
        yield channels
        await channels.settle()
        left = list(channels.unconsumed())
        if strict and left and not request.node.stash.get(_FAILED, False):
            noun = "push or broadcast was" if len(left) == 1 else "pushes or broadcasts were"
            listing = "\n  ".join(describe(m) for m in left)
            pytest.fail(
                f"{len(left)} {noun} never asserted:\n  {listing}\n"
                "Assert them with assert_push / assert_broadcast, or relax this check with "
                "@pytest.mark.chanctl(strict_pushes=False).",
                pytrace=False,
            )


@pytest_asyncio.fixture
async def chanctl_server(chanctl_config: CompiledConfig) -> AsyncIterator[ChannelServer]:
    """Opt-in: the config served for real on 127.0.0.1, port 0; ``server.url`` and
    ``server.signer.mint(user_id)`` give what a client needs."""
    async with build_server(chanctl_config, host="127.0.0.1", port=0) as server:
        yield server
