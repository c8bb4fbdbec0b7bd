"""The ``cluster:`` section: loading, ``${VAR}``, located problems, ``check`` and ``serve --redis``."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from chanctl.cli.main import app
from chanctl.config.load import load_config_text
from chanctl.config.model import default_node_name
from chanctl.errors import ConfigError
from tests.support import SECRET

BASE = "auth:\n  secret: ${CHANCTL_SECRET}\ntopics:\n  room:\n    join: true\n"


def load(text: str, **env: str):
    return load_config_text(text, "app.yaml", {"CHANCTL_SECRET": SECRET, **env}).config


def test_without_a_cluster_section_there_is_no_cluster():
    assert load(BASE).cluster is None


def test_the_section_interpolates_and_defaults():
    config = load(BASE + "cluster:\n  redis: ${REDIS_URL}\n", REDIS_URL="redis://:pw@10.0.0.5:6380/2")
    cluster = config.cluster
    assert cluster.redis == "redis://:pw@10.0.0.5:6380/2"
    assert cluster.redis_shown == "redis://:***@10.0.0.5:6380/2"
    assert cluster.down_after == 15.0 and cluster.prefix == "chanctl"
    assert cluster.node is None and cluster.node_name == default_node_name() == f"{os.uname().nodename}-{os.getpid()}"
    assert load(BASE + "cluster: {redis: 'redis://r', node: web-1, down_after: 5s}\n").cluster.node_name == "web-1"


@pytest.mark.parametrize(
    ("section", "path", "message"),
    [
        ("{redis: 'http://r'}", "cluster.redis", "not a Redis URL"),
        ("{redis: 'redis://'}", "cluster.redis", "names no host"),
        ("{redis: 'redis://r', node: 'a b'}", "cluster.node", "should match pattern"),
        ("{redis: 'redis://r', down_after: 0.1}", "cluster.down_after", "greater than or equal to 1"),
        ("{redis: 'redis://r', redsi: 1}", "cluster.redsi", "unknown key"),
        ("{node: web-1}", "cluster.redis", "required"),
    ],
)
def test_a_bad_section_is_a_located_problem(section, path, message):
    with pytest.raises(ConfigError) as info:
        load(BASE + f"cluster: {section}\n")
    [problem] = info.value.problems
    assert problem.path == path and message in problem.message and problem.line == 6


def test_check_summarizes_the_cluster_without_its_password(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.yaml").write_text(BASE + "cluster: {redis: 'redis://:hunter2@r:6379', node: web-1}\n")
    result = CliRunner().invoke(app, ["check", "app.yaml"], env={"CHANCTL_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    assert "cluster: redis redis://:***@r:6379, node web-1" in result.stdout
    assert "hunter2" not in result.stdout


def test_serve_redis_and_node_options_set_the_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.yaml").write_text(BASE)
    seen = []

    async def fake_run(loaded, host, port, reuse_port=False, worker=0):
        seen.append(loaded.config.cluster)

    monkeypatch.setattr("chanctl.cli.serve._run", fake_run)
    runner = CliRunner()
    env = {"CHANCTL_SECRET": SECRET}
    assert runner.invoke(app, ["serve", "app.yaml", "--redis", "redis://r:6379", "--node", "n1"], env=env).exit_code == 0
    assert (seen[-1].redis, seen[-1].node) == ("redis://r:6379", "n1")
    assert runner.invoke(app, ["serve", "app.yaml"], env=env).exit_code == 0
    assert seen[-1] is None
    bad = runner.invoke(app, ["serve", "app.yaml", "--redis", "http://r"], env=env)
    assert bad.exit_code == 2 and "--redis: not a Redis URL" in bad.stderr and "Traceback" not in bad.output
    lonely = runner.invoke(app, ["serve", "app.yaml", "--node", "n1"], env=env)
    assert lonely.exit_code == 2 and "--node needs a cluster" in lonely.stderr
