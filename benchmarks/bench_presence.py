"""Presence at scale: N sessions join one topic at once; unbatched (Phoenix's one diff per join) against
batched diffs and count mode.

For each size and mode it starts ``chanctl serve`` as a user would (its own process, so that its
peak RSS is its own), opens N sessions with a Node load generator (benchmarks/presence_load.mjs,
not timed), sends every ``phx_join`` in one burst, and waits until every session's presence list holds
all N keys. Reported: frames the server sent (counted by the clients), presence frames by kind, MiB
sent, time until every list is complete, server peak RSS (VmHWM), and each mode's ratio to the
unbatched baseline measured in the same run. Medians over ``--repeat`` runs.

    python benchmarks/bench_presence.py                       # 1,000 and 5,000 sessions
    python benchmarks/bench_presence.py --sizes 1000 --repeat 3
    python benchmarks/bench_presence.py --sizes 10000 --modes "batched 50ms"     # issue 15: list at 10,000
    python benchmarks/bench_presence.py --sizes 50000 --modes "count 50ms" --workers 4  # count at 50,000

Reported too: the server's CPU (summed over its processes) and the generators' CPU, from the burst
until every list is complete (plus 300 ms): on a shared machine the wall-clock time is the machine's
load as much as chanctl's, the CPU-seconds are not.

It raises its open-file limit (the server and the generators inherit it) to what N sockets need.
This container's hard limit is 20,000 descriptors a process, so a run spreads its sessions over
several generator processes (``--generators``, default one per 15,000 sessions, each from its own
127.0.0.x source address: one has about 28,000 ephemeral ports) that connect first and then burst
together, and past about 19,000 sessions the server must be several processes too:
``--workers W`` runs ``chanctl serve --workers W --redis URL`` with a redis-server it starts (the
workers are one cluster, so every member still sees the whole topic).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import cpu_seconds, free_port  # noqa: E402  (benchmarks/run.py: the one /proc reader)

from chanctl.tokens import TokenSigner  # noqa: E402

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
MODES = {
    "unbatched": "{batch: 0}",
    "batched 50ms": "{batch: 50ms}",
    "count 50ms": "{batch: 50ms, mode: count}",
}
CONFIG = """
auth: {secret: "%s", max_age: 1h}
server: {max_channels: 10, outbound_buffer: 64MiB, idle_timeout: 1h, rate_limit: null,  # the generator sends no heartbeats
         max_connections: null, max_connections_per_address: null}  # N sessions from 127.0.0.1
topics:
  "room:{id}":
    join: true
    presence: %s
"""


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def raise_fd_limit(sessions: int) -> None:
    """Enough descriptors for ``sessions`` sockets at each end (root may raise the hard limit too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, sessions + 4096)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def start_server(config: Path, workers: int, redis_url: str | None) -> tuple[subprocess.Popen, list[int], str]:
    """``chanctl serve`` as a user runs it (``--workers`` with a Redis past one process); returns the
    process, the pids that serve (the workers, or the server itself) and the socket URL."""
    argv = [sys.executable, "-m", "chanctl", "serve", str(config), "--port", "0"]
    if workers > 1:
        argv += ["--workers", str(workers), "--redis", str(redis_url)]
    server = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    pids, urls = [server.pid], []
    while len(urls) < workers:
        line = server.stderr.readline()
        if not line:
            raise RuntimeError("chanctl serve exited before listening")
        if " workers on " in line:  # chanctl: 4 workers on 127.0.0.1:PORT (pids 1, 2, 3, 4)
            pids = [int(pid) for pid in line.rsplit("(pids ", 1)[1].rstrip(")\n").split(", ")]
        if " at ws://" in line:
            urls.append(line.split(" at ", 1)[1].split()[0])
    return server, pids, urls[0]


def start_redis() -> tuple[subprocess.Popen, str]:
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.PIPE, text=True)
    assert redis.stdout is not None
    for line in redis.stdout:
        if "Ready to accept connections" in line:
            break
    else:
        raise RuntimeError("redis-server exited before it was ready")
    subprocess.Popen(["cat"], stdin=redis.stdout, stdout=subprocess.DEVNULL)
    return redis, f"redis://127.0.0.1:{port}/0"


def run_once(node: str, n: int, presence: str, tokens: list[str], workdir: Path, timeout: float,
             workers: int, generators: int) -> dict:
    config = workdir / "presence.yaml"
    config.write_text(CONFIG % (SECRET, presence))
    redis, redis_url = start_redis() if workers > 1 else (None, None)
    server, pids, url = start_server(config, workers, redis_url)
    procs: list[subprocess.Popen] = []
    try:
        # Keep the pipe drained so that the server never blocks on its log.
        assert server.stderr is not None
        drain = subprocess.Popen(["cat"], stdin=server.stderr, stdout=subprocess.DEVNULL)
        for i in range(generators):
            mine = workdir / f"tokens-{i}.txt"
            mine.write_text("\n".join(tokens[i::generators]) + "\n")
            # Each process its own source address: one has about 28,000 ephemeral ports.
            procs.append(subprocess.Popen(
                [node, "--max-old-space-size=8192", str(ROOT / "benchmarks" / "presence_load.mjs"), url, str(mine),
                 "room:1", str(int(timeout * 1000)), str(n), f"127.0.0.{i + 1}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
        for proc in procs:  # every socket of every generator open, then one burst
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"load generator failed:\n{proc.communicate()[1]}")
        cpu = sum(cpu_seconds(pid) for pid in pids)
        redis_cpu = cpu_seconds(redis.pid) if redis is not None else 0.0
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout + 120)
            if proc.returncode != 0:
                raise RuntimeError(f"load generator failed:\n{out}\n{err}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        merged = merge(results)
        merged["server_cpu_ms"] = round((sum(cpu_seconds(pid) for pid in pids) - cpu) * 1000)
        if redis is not None:
            merged["redis_cpu_ms"] = round((cpu_seconds(redis.pid) - redis_cpu) * 1000)
        peaks = [peak_rss_mib(pid) for pid in pids]
        merged["peak_rss_mib"] = max(peaks)
        if workers > 1:
            merged["peak_rss_mib_sum"] = sum(peaks)
        return merged
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.terminate()
        server.wait(60)
        drain.wait(5) if "drain" in locals() else None
        if redis is not None:
            redis.terminate()
            redis.wait(30)


def merge(results: list[dict]) -> dict:
    """One run's figures from its generator processes: counts summed, the last completion."""
    out = {key: sum(r[key] for r in results) for key in results[0] if isinstance(results[0][key], int)
           and key not in ("all_complete_ms", "first_complete_ms", "generator_cpu_ms")}
    out["timed_out"] = any(r["timed_out"] for r in results)
    done = [r["all_complete_ms"] for r in results]
    out["all_complete_ms"] = None if None in done else max(done)
    firsts = [r["first_complete_ms"] for r in results if r["first_complete_ms"] is not None]
    out["first_complete_ms"] = min(firsts) if firsts else None
    out["generator_cpu_ms"] = sum(r["generator_cpu_ms"] for r in results)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds a run may take to complete")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes (chanctl serve --workers, one cluster through a redis-server this starts)")
    parser.add_argument("--generators", type=int, default=None,
                        help="load generator processes (default: one per 15,000 sessions)")
    args = parser.parse_args()
    # SIGTERM (`timeout`, a CI runner) ends the run like Ctrl+C, through run_once's cleanup of the
    # servers, generators and redis-server it started; by default it killed this process alone.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    node = shutil.which("node")
    if node is None or not (ROOT / "tests" / "js" / "node_modules" / "ws").is_dir():
        sys.exit("needs Node and tests/js/node_modules (npm ci --prefix tests/js)")
    raise_fd_limit(max(args.sizes))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if max(args.sizes) / args.workers > limit - 1000:
        sys.exit(f"{max(args.sizes):,} sessions over {args.workers} server process(es) need more than the "
                 f"open-file limit of {limit:,} each: give --workers")
    signer = TokenSigner(SECRET)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for n in args.sizes:
            tokens = [signer.mint(user) for user in range(1, n + 1)]
            generators = args.generators or -(-n // 15000)
            for mode in args.modes:
                runs = []
                for _ in range(args.repeat):
                    started = time.monotonic()
                    run = run_once(node, n, MODES[mode], tokens, workdir, args.timeout, args.workers, generators)
                    run["wall_s"] = round(time.monotonic() - started, 1)
                    runs.append(run)
                    print(f"# {n} {mode}: {json.dumps(run)}", file=sys.stderr, flush=True)
                rows.append((n, mode, runs))
    print_table(rows)


def median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def print_table(rows: list[tuple[int, str, list[dict]]]) -> None:
    print("| sessions | mode | frames sent | presence_diff | presence_state | presence_count | MiB sent "
          "| all lists complete (ms) | peak RSS (MiB) | server CPU (s) | generator CPU (s) | frames vs unbatched | time vs unbatched |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    base: dict[int, tuple[float | None, float | None]] = {}
    for n, mode, runs in rows:
        frames, done = median(runs, "frames"), median(runs, "all_complete_ms")
        if mode == "unbatched":
            base[n] = (frames, done)
        b_frames, b_done = base.get(n, (None, None))
        ratio_f = f"{frames / b_frames:.3f}" if frames and b_frames else "-"
        ratio_t = f"{done / b_done:.3f}" if done and b_done else "-"
        incomplete = [r for r in runs if r["timed_out"]]
        done_text = f"{done:.0f}" if done is not None else f"incomplete ({incomplete[0]['complete']}/{n} lists)"
        print(
            f"| {n:,} | {mode} | {median(runs, 'frames'):,.0f} | {median(runs, 'presence_diff'):,.0f} "
            f"| {median(runs, 'presence_state'):,.0f} | {median(runs, 'presence_count'):,.0f} "
            f"| {median(runs, 'bytes') / 2**20:,.1f} | {done_text} | {median(runs, 'peak_rss_mib'):,.0f} "
            f"| {median(runs, 'server_cpu_ms') / 1000:.1f} | {median(runs, 'generator_cpu_ms') / 1000:.1f} | {ratio_f} | {ratio_t} |"
        )


if __name__ == "__main__":
    main()
