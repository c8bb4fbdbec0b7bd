"""Where a chanctl server spends its time under one load: cProfile of the server, in-process.

Runs ``chanctl serve``'s server (the same ``build_server``) in this process with cProfile on, drives
it with one ``loadgen.mjs`` scenario (Node, pinned to core 1; the server to core 0), then prints
the functions by own time and by cumulative time. Call counts are load-proof (the machine may be
shared); times are cProfile's, inflated by its own overhead, so compare them with each other only.

    python benchmarks/profile_server.py connect '{"n": 2000, "concurrency": 50}'
    python benchmarks/profile_server.py connect '{"n": 2000, "concurrency": 50}' --presence
    python benchmarks/profile_server.py chat '{"rooms": 500, "rate": 2, "seconds": 5}' --out /tmp/chat.prof
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run  # noqa: E402  (benchmarks/run.py: SECRET, pinned)

from chanctl.server.compile import compile_text  # noqa: E402
from chanctl.server.runtime import build_server  # noqa: E402
from chanctl.tokens import TokenSigner  # noqa: E402

PRESENCE = "    presence: true\n"


def config_text(presence: bool) -> str:
    """benchmarks/bench.yaml, with ``presence: true`` on its topics when asked."""
    text = (HERE / "bench.yaml").read_text()
    return text.replace("    join: true\n", "    join: true\n" + PRESENCE) if presence else text


async def profile(mode: str, opts: dict, presence: bool, profiler: cProfile.Profile) -> dict:
    os.environ["CHANCTL_SECRET"] = run.SECRET
    compiled = compile_text(config_text(presence), str(HERE / "bench.yaml"))
    async with build_server(compiled, port=0) as server:
        token = TokenSigner(run.SECRET).mint(1, {})
        url = f"{server.url}?token={token}&vsn=2.0.0"
        argv = run.pinned(1, ["node", str(HERE / "loadgen.mjs"), json.dumps({"mode": mode, "url": url, **opts})])
        profiler.enable()
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        profiler.disable()
        return json.loads(out.decode().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["connect", "chat", "fanout"])
    parser.add_argument("opts", help="loadgen.mjs options as JSON")
    parser.add_argument("--presence", action="store_true", help="presence: true on the bench topics")
    parser.add_argument("--out", help="also write the raw profile here (for snakeviz, pstats)")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    profiler = cProfile.Profile()
    result = asyncio.run(profile(args.mode, json.loads(args.opts), args.presence, profiler))
    print(f"# loadgen: {json.dumps(result)}")
    if args.out:
        profiler.dump_stats(args.out)
    for key in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(args.top)
        print(text.getvalue())


if __name__ == "__main__":
    main()
