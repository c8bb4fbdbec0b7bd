"""Presence at scale: N sessions join one topic at once; unbatched (Phoenix's one diff per join) against
batched diffs and count mode.

For each size and mode it starts ``chanctl serve`` as a user would (its own process, so that its
peak RSS is its own), opens N sessions with a Node ``ws`` load generator (benchmarks/presence_load.mjs,
not timed), sends every ``phx_join`` in one burst, and waits until every session's presence list holds
all N keys. Reported: frames the server sent (counted by the clients), presence frames by kind, MiB
sent, time until every list is complete, server peak RSS (VmHWM), and each mode's ratio to the
unbatched baseline measured in the same run. Medians over ``--repeat`` runs.

    python benchmarks/bench_presence.py                       # 1,000 and 5,000 sessions
    python benchmarks/bench_presence.py --sizes 1000 --repeat 3
    python benchmarks/bench_presence.py --sizes 10000 --modes "batched 50ms"     # issue 15: list at 10,000
    python benchmarks/bench_presence.py --sizes 50000 --modes "count 50ms"       # and count at 50,000

It raises its open-file limit (the server and the generator inherit it) to what N sockets need, and
past 20,000 sessions spreads the generator's sockets over several 127.0.0.x source addresses (one
has about 28,000 ephemeral ports).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def source_addresses(sessions: int) -> str:
    """Source addresses for the generator's sockets: 127.0.0.1 alone up to 20,000."""
    return ",".join(f"127.0.0.{i + 1}" for i in range(1 + sessions // 20000))


def run_once(node: str, n: int, presence: str, tokens: Path, workdir: Path, timeout: float) -> dict:
    config = workdir / "presence.yaml"
    config.write_text(CONFIG % (SECRET, presence))
    server = subprocess.Popen(
        [sys.executable, "-m", "chanctl", "serve", str(config), "--port", "0"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert server.stderr is not None
        url = None
        while url is None:
            line = server.stderr.readline()
            if not line:
                raise RuntimeError("chanctl serve exited before listening")
            if " at ws://" in line:
                url = line.split(" at ", 1)[1].split()[0]
        # Keep the pipe drained so that the server never blocks on its log.
        drain = subprocess.Popen(["cat"], stdin=server.stderr, stdout=subprocess.DEVNULL)
        result = subprocess.run(
            [node, "--max-old-space-size=8192", str(ROOT / "benchmarks" / "presence_load.mjs"), url, str(tokens), "room:1",
             str(int(timeout * 1000)), source_addresses(n)],
            capture_output=True, text=True, timeout=timeout + 120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{result.stdout}\n{result.stderr}")
        out = json.loads(result.stdout.strip().splitlines()[-1])
        out["peak_rss_mib"] = peak_rss_mib(server.pid)
        return out
    finally:
        server.terminate()
        server.wait(30)
        drain.wait(5) if "drain" in locals() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds a run may take to complete")
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None or not (ROOT / "tests" / "js" / "node_modules" / "ws").is_dir():
        sys.exit("needs Node and tests/js/node_modules (npm ci --prefix tests/js)")
    raise_fd_limit(max(args.sizes))
    signer = TokenSigner(SECRET)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for n in args.sizes:
            tokens = workdir / f"tokens-{n}.txt"
            tokens.write_text("\n".join(signer.mint(user) for user in range(1, n + 1)) + "\n")
            for mode in args.modes:
                runs = []
                for _ in range(args.repeat):
                    started = time.monotonic()
                    run = run_once(node, n, MODES[mode], tokens, workdir, args.timeout)
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
          "| all lists complete (ms) | peak RSS (MiB) | frames vs unbatched | time vs unbatched |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
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
            f"| {median(runs, 'bytes') / 2**20:,.1f} | {done_text} | {median(runs, 'peak_rss_mib'):,.0f} | {ratio_f} | {ratio_t} |"
        )


if __name__ == "__main__":
    main()
