"""``chanctl bench`` as a user runs it, against real servers on 127.0.0.1 port 0, at small sizes.

The servers run in the test's event loop; the command runs in a subprocess (with its own worker
processes), awaited so the servers keep serving.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import orjson
import pytest

from tests.cli.run import chanctl
from tests.conftest import CHAT
from tests.support import QUIET, ROOT, TIMEOUT

BENCH_YAML = """
server: {rate_limit: null}
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "bench:{id}":
    join: true
    events:
      msg: {do: broadcast}
"""


async def bench(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | None, str]:
    # Waited on past the bench's own 8 s limit: its worker processes start (imports) before it
    # counts, which on a loaded machine took the whole of the suite's 10 s.
    result = await chanctl("bench", *args, "--json", "--quiet", "--timeout", "5", "--time-limit", "8s", env=env,
                           timeout=8 + 2 * TIMEOUT)
    report = orjson.loads(result.out) if result.out.strip() else None
    return result.code, report, result.err


def on(server: Any, *args: str) -> list[str]:
    return ["--url", server.url, "--config", str(CHAT), *args]


async def test_connect_reports_latencies_rate_and_every_parameter(chat_server):
    code, report, err = await bench("connect", *on(chat_server, "--clients", "12", "--concurrency", "4"))
    assert code == 0, err
    assert report["scenario"] == "connect" and report["complete"] is True
    assert report["figures"]["joined"] == report["figures"]["connected"] == 12
    assert report["figures"]["joins_per_s"] > 0
    assert report["latency_ms"]["connect_join"]["count"] == 12
    assert set(report["latency_ms"]) == {"connect", "join", "connect_join"}
    for name in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
        assert report["latency_ms"]["join"][name] > 0
    assert report["headline"] == {"rate_name": "joins_per_s", "rate": report["figures"]["joins_per_s"],
                                  "p99_ms": report["latency_ms"]["connect_join"]["p99_ms"], "latency_name": "connect_join"}
    params = report["parameters"]
    assert params["clients"] == 12 and params["concurrency"] == 4 and params["topic"] == "room:lobby"
    assert params["urls"] == [chat_server.url]
    assert {"workers", "timeout", "time_limit", "event", "payload", "params"} <= set(params)
    assert report["errors"] == {} and report["thresholds"] == [] and report["exit_code"] == 0
    assert report["generator"]["workers"] == 1 and report["generator"]["per_worker"][0]["cpu_s"] >= 0


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_fanout_delivers_every_message_to_every_subscriber(chat_server, loop):
    code, report, err = await bench("fanout", *on(chat_server, "--clients", "8", "--messages", "30", "--window", "5"),
                                    env={"CHANCTL_BENCH_LOOP": loop})
    assert code == 0, err
    assert report["generator"]["loop"] == loop
    figures = report["figures"]
    assert (figures["subscribers"], figures["sent"], figures["deliveries"]) == (8, 30, 240)
    assert figures["delivered_ratio"] == 1.0 and figures["deliveries_per_s"] > 0
    assert report["latency_ms"]["delivery"]["count"] == 240
    assert report["headline"]["rate_name"] == "deliveries_per_s"


async def test_chat_over_several_topics_with_two_workers(make_server):
    async with make_server(BENCH_YAML) as server:
        code, report, err = await bench(
            "chat", "--url", server.url, "--config", str(CHAT), "--topic", "bench:{n}", "--event", "msg",
            "--topics", "3", "--members", "2", "--rate", "5", "--duration", "1s", "--workers", "2",
        )
    assert code == 0, err
    figures = report["figures"]
    assert figures["members_joined"] == 6 and figures["sent"] == 30
    assert figures["deliveries"] == figures["expected"] == 60  # each message reaches both members
    assert report["latency_ms"]["send_lag"]["count"] == 30
    assert len(report["generator"]["per_worker"]) == 2


async def test_presence_waits_until_every_list_is_right_after_joins_and_leaves(chat_server):
    code, report, err = await bench("presence", *on(chat_server, "--clients", "9", "--wave", "4", "--wave-interval", "20ms"))
    assert code == 0, err
    figures = report["figures"]
    assert figures["joined"] == 9 and figures["keys"] == 9 and figures["leavers"] == 4
    assert figures["all_lists_right_after_joins_ms"] > 0 and figures["all_lists_right_after_leaves_ms"] > 0
    assert figures["frames_per_client"] > 1 and figures["bytes_per_client"] > 100


async def test_reconnect_brings_every_dropped_client_back(chat_server):
    code, report, err = await bench("reconnect", *on(chat_server, "--clients", "10", "--concurrency", "5"))
    assert code == 0, err
    figures = report["figures"]
    assert figures["joined_before"] == figures["dropped"] == figures["rejoined"] == 10
    assert figures["all_rejoined_ms"] > 0 and report["latency_ms"]["rejoin"]["count"] == 10
    assert figures["recovered"] is None  # room:lobby keeps no history: nothing to recover


async def test_reconnect_rejoins_with_since_on_a_topic_with_history(make_server):
    config = BENCH_YAML.replace("join: true", "join: true\n    history: {size: 10, ttl: 1m}")
    async with make_server(config) as server:
        code, report, err = await bench("reconnect", "--url", server.url, "--config", str(CHAT), "--clients", "6",
                                        "--topic", "bench:h")
    assert code == 0, err
    figures = report["figures"]
    assert figures["rejoined"] == 6 and (figures["recovered"], figures["not_recovered"]) == (6, 0)


async def test_thresholds_set_the_exit_code(chat_server):
    args = on(chat_server, "--clients", "5", "--concurrency", "5")
    code, report, err = await bench("connect", *args, "--max-p99", "0.001ms", "--min-rate", "1", "--max-errors", "0")
    assert code == 1, err
    assert report["exit_code"] == 1
    checks = {check["name"]: check for check in report["thresholds"]}
    assert checks["max_p99_ms"]["ok"] is False and checks["max_p99_ms"]["limit"] == 0.000001 * 1000
    assert checks["min_rate"]["ok"] is True and checks["max_errors"]["ok"] is True
    code, report, err = await bench("connect", *args, "--max-p99", "10s", "--min-rate", "1")
    assert code == 0 and all(check["ok"] for check in report["thresholds"]), err
    code, report, err = await bench("connect", *args, "--min-rate", "1e12")
    assert code == 1 and report["thresholds"][0]["ok"] is False


async def test_refusals_are_counted_by_reason_and_exit_3(chat_server):
    # Users 1..4 are no members of room:42: every join is refused, with the server's reason.
    code, report, err = await bench("connect", *on(chat_server, "--clients", "4", "--topic", "room:42"))
    assert code == 3, err
    assert report["errors"] == {"join refused: unauthorized": 4}
    code, report, err = await bench("connect", "--url", chat_server.url, "--token", "forged.token.value", "--clients", "3")
    assert code == 3, err
    assert report["errors"] == {"refused: HTTP 403": 3}


async def test_a_token_file_gives_each_client_its_line(chat_server, mint, tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text(f"{mint(42)}\n{mint(7)}\n\nnot-a-token\n")
    code, report, err = await bench("connect", "--url", chat_server.url, "--tokens", str(path), "--clients", "6",
                                    "--topic", "room:42")
    assert code == 0, err  # some got in: the run measured something
    assert report["figures"]["joined"] == 4  # lines 1, 2 for clients 0, 1, 3, 4
    assert report["errors"] == {"refused: HTTP 403": 2}


async def test_an_unreachable_server_exits_4():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, report, err = await bench("connect", "--url", f"ws://127.0.0.1:{port}/socket", "--clients", "2")
    assert code == 4, err
    assert sum(report["errors"].values()) == 2
    assert all(reason.startswith("unreachable: ") for reason in report["errors"]), report["errors"]


@pytest.mark.parametrize(("args", "message"), [
    (["fanout", "--payload", '{"body": "hi"}'], '"{stamp}"'),
    (["chat", "--topics", "3"], "{n}"),
    (["warp"], "unknown scenario"),
    (["connect", "--max-p99", "soon"], "--max-p99"),
    (["connect", "--payload", "{"], "--payload is not JSON"),
])
async def test_usage_errors_exit_2(args, message):
    result = await chanctl("bench", *args, "--url", "ws://127.0.0.1:1/socket")
    assert result.code == 2 and message in result.err, result.err


async def test_against_a_server_that_is_not_chanctl():
    """benchmarks/plain_server.py speaks just enough Phoenix V2 (join replies, broadcasts), no tokens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "benchmarks" / "plain_server.py"), str(port), stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 10)).strip() == b"ready"
        code, report, err = await bench("fanout", "--url", f"ws://127.0.0.1:{port}/socket", "--clients", "5",
                                        "--messages", "10", "--topic", "bench:x", "--event", "msg")
    finally:
        proc.kill()
        await proc.wait()
    assert code == 0, err
    assert report["figures"]["deliveries"] == 50 and report["figures"]["delivered_ratio"] == 1.0



async def test_repeated_urls_spread_the_clients_over_the_servers(chat_config):
    from chanctl.server.runtime import build_server

    async with build_server(chat_config, host="127.0.0.1", port=0) as first, \
            build_server(chat_config, host="127.0.0.1", port=0) as second:
        code, report, err = await bench("connect", "--url", first.url, "--url", second.url, "--config", str(CHAT),
                                        "--clients", "5")
        assert code == 0, err
        assert (first.stats.connections, second.stats.connections) == (3, 2)  # client i uses URL i mod 2
    assert report["parameters"]["urls"] == [first.url, second.url]


async def test_a_run_past_its_time_limit_stops_and_exits_4(chat_server):
    # 1 s was too short for the workers to start and send once on a loaded machine (load 8: sent 0).
    result = await chanctl("bench", "chat", *on(chat_server, "--members", "2", "--duration", "30s"),
                           "--json", "--quiet", "--time-limit", f"{10 * QUIET:g}s")
    report = orjson.loads(result.out)
    assert result.code == 4 and report["complete"] is False and report["exit_code"] == 4, result.err
    assert report["figures"]["sent"] > 0  # what it measured before the limit is still reported


def test_progress_is_a_plain_line_when_stderr_is_not_a_terminal(capsys):
    from chanctl.bench.plan import Plan
    from chanctl.cli.bench import Progress

    progress = Progress(Plan(scenario="fanout", urls=["ws://h/socket/websocket"], clients=10, messages=10))
    progress({"phase": "measure", "elapsed": 3.2, "per_s": 1234.5, "connected": 10, "joined": 10, "sent": 5,
              "delivered": 50, "errors": 1})
    progress.finish()
    assert capsys.readouterr().err == (
        "chanctl: 50% fanout measure  connected 10  joined 10  sent 5  delivered 50  1,234/s  errors 1  3s\n")
