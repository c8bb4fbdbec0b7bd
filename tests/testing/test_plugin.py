"""The pytest plugin, run the way a user runs it: a test file in a fresh pytest session (pytester)."""

from __future__ import annotations

import cel  # noqa: F401  (imported here, before pytester: see below)
import pytest

from tests.support import ROOT

# pytester's in-process runs forget the modules each run imported, and the CEL library (a Rust
# extension) panics when it is initialised a second time in one process ("SetLoggerError"). Importing
# it before any run keeps it, so a file of these tests passes alone as it does in the full suite.

pytest_plugins = ["pytester"]

CHAT = ROOT / "sample_configs" / "chat.yaml"


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A user's project whose ini names the chat sample and nothing else: no asyncio settings (so
    pytest-asyncio is in its default strict mode), none of this repo's. The plugin loads by name, not
    by entry point, so that the run does not depend on how this checkout is installed."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini(f"[pytest]\nchanctl_config = {CHAT}\n")
    return pytester


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest("-p", "pytest_asyncio.plugin", "-p", "chanctl.testing._plugin", *args)


def test_a_users_chat_tests_pass(project: pytest.Pytester):
    project.makepyfile(
        """
        import pytest
        from chanctl.testing import JoinRefused

        async def test_member_joins_and_talks(chanctl_channels):
            socket = chanctl_channels.connect(42)
            reply, room = await socket.join("room:42")
            assert reply == {}
            await room.assert_push("presence_state", {"42": {}})
            await room.assert_broadcast("presence_diff")
            ref = room.push("new_msg", {"body": "hi"})
            await room.assert_reply(ref, "ok")
            await room.assert_broadcast("new_msg", {"body": "hi", "user_id": 42})
            await room.refute_push()
            await room.leave()

        async def test_stranger_is_refused(chanctl_channels):
            with pytest.raises(JoinRefused) as refused:
                await chanctl_channels.connect(99).join("room:42")
            assert refused.value.response == {"reason": "unauthorized"}

        async def test_schema_error(chanctl_channels):
            _, feed = await chanctl_channels.connect(99).join("room:lobby")
            await feed.assert_push("presence_state")
            await feed.assert_push("presence_diff")
            ref = feed.push("new_msg", {"body": ""})
            reply = await feed.assert_reply(ref, "error")
            assert list(reply["errors"]) == ["body"]
        """
    )
    run(project).assert_outcomes(passed=3)


def test_unasserted_push_fails_at_teardown_and_says_how_to_relax(project: pytest.Pytester):
    project.makepyfile(
        """
        async def test_forgets_presence(chanctl_channels):
            await chanctl_channels.connect(42).join("room:42")
        """
    )
    result = run(project)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*2 pushes or broadcasts were never asserted:",
        "*broadcast 'presence_diff' on room:42: {\"joins\":{\"42\":{\"metas\":*",
        "*push 'presence_state' on room:42:*",
        "*@pytest.mark.chanctl(strict_pushes=False)*",
    ])


def test_marker_relaxes_the_check_and_picks_the_config(project: pytest.Pytester):
    project.makefile(".yaml", other="auth: {secret: 0123456789abcdef0123456789abcdef}\ntopics:\n  'open:{x}': {join: true}\n")
    project.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.chanctl(strict_pushes=False)

        async def test_relaxed(chanctl_channels):
            await chanctl_channels.connect(42).join("room:42")

        @pytest.mark.chanctl(config="other.yaml", strict_pushes=True)
        async def test_other_config(chanctl_channels):
            reply, chan = await chanctl_channels.connect(1).join("open:1")
            await chan.refute_push()

        @pytest.mark.chanctl(strict=False)
        async def test_bad_option(chanctl_channels):
            pass
        """
    )
    result = run(project)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.chanctl: unknown option strict; it takes keywords:", "*strict_pushes:*"])


def test_an_unexpected_crash_fails_at_teardown(project: pytest.Pytester):
    project.makefile(".yaml", ticker="auth: {secret: 0123456789abcdef0123456789abcdef}\n"
                     "topics:\n  'tick:{id}': {handler: 'tests.testing.handlers:Ticker'}\n")
    project.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.chanctl(config="ticker.yaml")

        async def test_crash_seen(chanctl_channels):
            _, chan = await chanctl_channels.connect(1).join("tick:a")
            chan.push("boom")
            assert await chan.assert_exit() == "crashed"

        async def test_crash_unseen(chanctl_channels):
            _, chan = await chanctl_channels.connect(1).join("tick:a")
            await chan.assert_reply(chan.push("echo", {}))
            chan.push("boom")
        """
    )
    result = run(project)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_crash_unseen*",
        "*phx_error on tick:a: the channel crashed (expect it with assert_exit)",
    ])


def test_a_failing_test_is_not_also_a_teardown_error(project: pytest.Pytester):
    project.makepyfile(
        """
        async def test_waits_for_nothing(chanctl_channels):
            _, room = await chanctl_channels.connect(42).join("room:42")
            await room.assert_push("never", timeout=0.05)
        """
    )
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*expected a push 'never' matching None on room:42 within 0.05s; the inbox holds:*"])


def test_real_server_fixture(project: pytest.Pytester):
    project.makepyfile(
        """
        from chanctl.client.socket import Client

        async def test_over_a_socket(chanctl_server):
            token = chanctl_server.signer.mint(42)
            async with Client(chanctl_server.url, token=token) as client:
                reply = await client.channel("room:42").join()
                assert reply == {}
        """
    )
    run(project).assert_outcomes(passed=1)


def test_the_readme_example_passes(project: pytest.Pytester):
    readme = (ROOT / "README.md").read_text()
    example = readme.split("<!-- test_readme_example -->\n```python\n", 1)[1].split("```", 1)[0]
    project.mkdir("sample_configs")
    (project.path / "sample_configs" / "chat.yaml").write_text(CHAT.read_text())
    project.makepyfile(test_readme=example)
    run(project).assert_outcomes(passed=2)


def test_a_fresh_project_needs_nothing_but_the_install(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Issue 9: after `pip install 'chanctl[testing]'` alone, plugins load by their entry points, the
    project has no pytest settings at all, and the README's kind of test runs (its config by marker)."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    (pytester.path / "chat.yaml").write_text(CHAT.read_text())
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.chanctl(config="chat.yaml")

        async def test_by_module_marker(chanctl_channels):
            _, room = await chanctl_channels.connect(42).join("room:42")
            await room.assert_push("presence_state")
            await room.assert_push("presence_diff")

        class TestInAClass:
            async def test_method(self, chanctl_config):
                assert "room:{id}" in chanctl_config.config.topics

        async def test_marker_only():
            pass
        """
    )
    # Another async test of the project, not ours: the plugin leaves it to the project's asyncio mode.
    pytester.makepyfile(test_other="async def test_not_ours():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestDeprecationWarning")
    result.assert_outcomes(passed=3, failed=1)  # pytest's own verdict on an async test nobody runs
    result.stdout.fnmatch_lines(["FAILED test_other.py::test_not_ours - Failed: async def functions are not nat*"])


def test_the_entry_point_names_the_plugin():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"] == {"chanctl": "chanctl.testing._plugin"}
