"""`chanctl serve` as a process: banner, clean stops, refusals without tracebacks."""

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import CHAT
from tests.support import SECRET, TIMEOUT


def test_banner_names_url_topics_and_auth(serve_process):
    served = serve_process()
    banner = "".join(served.banner)
    assert served.url.startswith("ws://127.0.0.1:") and served.url.endswith("/socket/websocket")
    assert "topic room:{id}" in banner and "topic updates:all" in banner
    assert "auth: signed tokens" in banner


def test_banner_gives_the_longpoll_endpoint_as_an_http_url(serve_process, tmp_path):
    config = tmp_path / "lp.yaml"
    config.write_text(CHAT.read_text().replace("  path: /socket\n", "  path: /socket\n  longpoll: {enabled: true}\n", 1))
    served = serve_process(config)
    port = served.url.split(":")[2].split("/")[0]
    assert f"  longpoll: http://127.0.0.1:{port}/socket/longpoll (" in "".join(served.banner)


def test_sigint_and_sigterm_stop_cleanly_with_exit_0(serve_process):
    for sig in (signal.SIGINT, signal.SIGTERM):
        served = serve_process()
        served.proc.send_signal(sig)
        assert served.proc.wait(TIMEOUT) == 0


def test_a_broken_config_refuses_to_start_with_every_problem(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("auth:\n  secret: ${NO_SUCH_VAR}\ntopics:\n  room:\n    evnts: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "chanctl", "serve", str(config)], capture_output=True, text=True, timeout=TIMEOUT * 4,
        env={k: v for k, v in os.environ.items() if k != "NO_SUCH_VAR"},
    )
    assert result.returncode == 1  # config problems are 1, as `chanctl check` says them
    assert "NO_SUCH_VAR is not set" in result.stderr
    assert "unknown key 'evnts'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_busy_port_is_a_clear_error(serve_process, tmp_path):
    served = serve_process()
    port = served.url.split(":")[2].split("/")[0]
    result = subprocess.run(
        [sys.executable, "-m", "chanctl", "serve", "sample_configs/chat.yaml", "--port", port],
        capture_output=True, text=True, timeout=TIMEOUT * 4,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert port in result.stderr



def test_sigterm_stops_even_when_stderr_is_gone():
    """Like `chanctl serve ... 2>&1 | head -1`: the reader went away, the server must still stop."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chanctl", "serve", "sample_configs/chat.yaml", "--port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    assert proc.stderr is not None
    while " at ws://" not in proc.stderr.readline():
        pass
    proc.stderr.close()
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()


def serve_log(act: Callable[[str], None], *args: str) -> str:
    """``chanctl serve`` the chat sample with ``args``; ``act`` on its socket URL; SIGTERM; the log after the URL line."""
    proc = subprocess.Popen([sys.executable, "-m", "chanctl", "serve", str(CHAT), "--port", "0", *args],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "CHANCTL_SECRET": SECRET})
    assert proc.stderr is not None
    try:
        line = ""
        while " at ws://" not in line:
            line = proc.stderr.readline()
            assert line, "chanctl serve exited"
        act(line.split(" at ", 1)[1].split()[0])
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=TIMEOUT)[1]
    finally:
        proc.kill()


def test_a_refused_handshake_is_one_log_line_chanctls():
    """chanctl logs the refusal with who and why; websockets' bare "HTTP response sent (403
    Forbidden)" after it said the same with neither, so it is left to --log-level debug."""
    def forged(url: str) -> None:
        with pytest.raises(InvalidStatus):
            connect(url + "?token=forged.token.here&vsn=2.0.0", open_timeout=TIMEOUT)

    rest = serve_log(forged)
    assert "connection refused: from 127.0.0.1:" in rest
    assert "HTTP response sent (403" not in rest


def test_health_probes_and_metrics_scrapes_log_nothing_at_info():
    """A load balancer probing /healthz and Prometheus scraping /metrics every few seconds would
    each add an INFO line naming neither path nor peer; --log-level debug still shows them."""
    def probe(url: str) -> None:
        base = "http" + url.removeprefix("ws").split("/socket", 1)[0]
        for path in ("/healthz", "/metrics"):
            with urllib.request.urlopen(base + path, timeout=TIMEOUT) as response:
                assert response.status == 200

    for level, expected in (("info", 0), ("debug", 2)):
        rest = serve_log(probe, "--log-level", level)
        assert rest.count("HTTP response sent (200 OK)") == expected, rest
