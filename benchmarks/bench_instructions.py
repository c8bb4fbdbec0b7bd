"""Instructions a server executes for one load (valgrind's callgrind): a count a shared machine
cannot disturb, for changes too small for wall-clock or CPU-seconds to decide.

Each server (plain loop, chanctl on bench.yaml, chanctl with ``presence: true``) starts under
``valgrind --tool=callgrind`` with instrumentation off (start-up is not counted), is switched on
with ``callgrind_control -i on`` right before loadgen.mjs runs one scenario, and dumped after it
(``connect``: once every socket has joined, then again ``--settle`` seconds after the generator
dropped them all). Reported: the server's instructions per connect+join (``connect``, the closes
apart), per delivered message (``chat``) or per delivery (``fanout``, the subscribers' connects included), and the ratio to the plain loop's. The count includes the interpreter and the kernel-facing libc, not the kernel.

    python benchmarks/bench_instructions.py connect '{"n": 300, "concurrency": 50}'
    python benchmarks/bench_instructions.py chat '{"rooms": 50, "rate": 2, "seconds": 3}' --kinds plain chanctl
    python benchmarks/bench_instructions.py connect '{"n": 300, "concurrency": 50}' --kinds chanctl before --baseline /tmp/before
    python benchmarks/bench_instructions.py fanout '{"subs": 1000, "messages": 300, "window": 20}' --kinds chanctl before --baseline /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (benchmarks/run.py: SECRET, ROOT, free_port, pinned)

KINDS = ("plain", "chanctl", "chanctl+presence")
BEFORE = ("before", "before+presence")
"""With ``--baseline DIR``: that checkout's chanctl (``git archive`` of the commit before a change)."""


def server_argv(kind: str, port: int, presence_config: Path) -> tuple[list[str], str]:
    if kind == "plain":
        return [sys.executable, str(HERE / "plain_server.py"), str(port)], f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"
    from chanctl.tokens import TokenSigner

    config = presence_config if kind.endswith("+presence") else HERE / "bench.yaml"
    token = TokenSigner(run.SECRET).mint(1, {})
    argv = [sys.executable, "-m", "chanctl", "serve", str(config), "--port", str(port), "--log-level", "warning"]
    return argv, f"ws://127.0.0.1:{port}/socket/websocket?token={token}&vsn=2.0.0"


def count(kind: str, mode: str, opts: dict, presence_config: Path, workdir: Path, settle: float,
          baseline: Path | None = None) -> dict:
    port = run.free_port()
    argv, url = server_argv(kind, port, presence_config)
    root = baseline if kind in BEFORE and baseline is not None else run.ROOT
    out = workdir / f"callgrind.{kind}.{time.monotonic_ns()}"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    env = {**os.environ, "CHANCTL_SECRET": run.SECRET, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(run.pinned(0, valgrind + argv), cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                run.socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{kind} did not start under valgrind")
                time.sleep(0.5)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        argv = run.pinned(1, ["node", str(HERE / "loadgen.mjs"), json.dumps({"mode": mode, "url": url, **opts, "hold": True})])
        gen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert gen.stdin is not None and gen.stdout is not None
        if mode == "connect":
            # Every socket joined and held: dump here (a dump zeroes the counts), so that the first
            # count is the connects and joins alone, the second the closes the generator's exit causes.
            gen.stdout.readline()
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        out_text, _ = gen.communicate("close\n", timeout=1800)
        if gen.returncode != 0:
            raise SystemExit(f"loadgen failed against {kind}: {out_text}")
        result = json.loads(out_text.splitlines()[-1])
        time.sleep(settle)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(120)
    counts = []  # the on-demand dumps, in order (not the one written at exit)
    for dump in sorted(workdir.glob(out.name + ".*"), key=lambda path: int(path.suffix[1:])):
        found = re.search(r"^summary:\s+(\d+)", dump.read_text(errors="replace"), re.M)
        if found:
            counts.append(int(found.group(1)))
    units = opts["n"] if mode == "connect" else result["delivered"] if mode == "chat" else result["deliveries"]
    total = counts[0] if counts else 0
    extra = {"close_per_unit": counts[1] / units} if mode == "connect" and len(counts) > 1 else {}
    return {"instructions": total, "units": units, "per_unit": total / units, **extra, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["connect", "chat", "fanout"])
    parser.add_argument("opts", help="loadgen.mjs options as JSON")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS + BEFORE)
    parser.add_argument("--baseline", type=Path, help="another checkout's chanctl, counted as the kinds 'before', 'before+presence'")
    parser.add_argument("--keep", help="keep the callgrind files in this directory (for callgrind_annotate)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds for the closes after the generator exits")
    args = parser.parse_args()
    opts = json.loads(args.opts)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        presence_config = workdir / "bench_presence.yaml"
        text = (HERE / "bench.yaml").read_text()
        presence_config.write_text(text.replace("    join: true\n", "    join: true\n    presence: true\n"))
        results = {}
        for kind in args.kinds:
            results[kind] = count(kind, args.mode, opts, presence_config, workdir, args.settle, args.baseline)
            print(f"# {kind}: {json.dumps(results[kind])}", file=sys.stderr, flush=True)
    unit = "connect+join" if args.mode == "connect" else "delivered message" if args.mode == "chat" else "delivery"
    print(f"{args.mode} {json.dumps(opts)}: server instructions per {unit} (callgrind)")
    base = results.get("plain")
    for kind, result in results.items():
        ratio = f"  plain/this {base['per_unit'] / result['per_unit']:.2f}x" if base else ""
        close = f"  (then {result['close_per_unit']:,.0f} per close)" if "close_per_unit" in result else ""
        print(f"  {kind:18} {result['per_unit']:>12,.0f}{ratio}{close}")


if __name__ == "__main__":
    main()
