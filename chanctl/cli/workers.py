"""``chanctl serve --workers N``: N server processes on one port, one cluster through one Redis.

Each worker is ``chanctl serve`` itself, started with ``--reuse-port``: the kernel spreads new
connections over the processes listening with ``SO_REUSEPORT`` on the same address, and the Redis
of the config's ``cluster:`` makes them one server (broadcasts, presence, disconnects, admin). The
parent holds the port while the workers start (so ``--port 0`` means one free port for all), prints
one line, forwards Ctrl+C / SIGTERM to every worker (each drains as a single server does) and exits
with the first non-zero status of theirs; a second Ctrl+C kills them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

from chanctl.cli.common import err

if TYPE_CHECKING:
    from chanctl.config.load import LoadedConfig

__all__ = ["run_workers"]


def run_workers(count: int, config: str, loaded: LoadedConfig, *, host: str | None, port: int | None,
                log_level: str, redis: str | None) -> int:
    """Run ``count`` workers until they stop; returns the exit code for the parent."""
    cluster = loaded.config.cluster
    assert cluster is not None
    host = host if host is not None else loaded.config.server.host
    port = port if port is not None else loaded.config.server.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Hold the port (bound, not listening: the kernel sends no connection to it) so that port 0
    # resolves once and nobody else takes it between two workers' binds.
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))
    except OSError as exc:
        err(f"chanctl: cannot listen on {host}:{port}: {exc.strerror or exc}")
        return 1
    port = holder.getsockname()[1]
    base = [sys.executable, "-m", "chanctl", "serve", config, "--host", host, "--port", str(port),
            "--log-level", log_level, "--reuse-port"]
    if redis is not None:
        base += ["--redis", redis]
    procs = []
    for index in range(1, count + 1):
        # Default names are host-pid (unique); a given name gets the worker's number.
        name = [] if cluster.node is None else ["--node", f"{cluster.node}-{index}"]
        # Their own session: a terminal's Ctrl+C reaches the parent only, which forwards one
        # SIGTERM (a worker that got both would take the second for "force exit").
        procs.append(subprocess.Popen([*base, *name, "--worker", str(index)], start_new_session=True))
    holder.close()
    err(f"chanctl: {count} workers on {host}:{port} (pids {', '.join(str(p.pid) for p in procs)})")
    stopping = threading.Event()
    presses = 0

    def on_signal(signum: int, frame: object) -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            stopping.set()
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        else:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            os._exit(130)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    alive = {proc.pid: proc for proc in procs}
    status = 0
    try:
        while alive:
            pid, raw = os.wait()
            proc = alive.pop(pid, None)
            if proc is None:
                continue
            proc.returncode = code = os.waitstatus_to_exitcode(raw)
            if code != 0 and status == 0:
                status = code if code > 0 else 1
            if not stopping.is_set():  # a worker ended on its own: the others stop too
                err(f"chanctl: worker {pid} exited with {code}; stopping the others")
                on_signal(signal.SIGTERM, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
