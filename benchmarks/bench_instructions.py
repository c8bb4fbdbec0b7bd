"""Instructions a server executes for one load (valgrind's callgrind): a count a shared machine
cannot disturb, for changes too small for wall-clock or CPU-seconds to decide.

Each server (plain loop, chanctl on bench.yaml, chanctl with ``presence: true``) starts under
``valgrind --tool=callgrind`` with instrumentation off (start-up is not counted), is switched on
with ``callgrind_control -i on`` right before loadgen.mjs runs one scenario, and dumped after it
(and after ``--settle`` seconds for the closes the generator's exit causes). Reported: the server's
instructions per connect+join (``connect``) or per delivered message (``chat``), and the ratio to
the plain loop's. The count includes the interpreter and the kernel-facing libc, not the kernel.

    python benchmarks/bench_instructions.py connect '{"n": 300, "concurrency": 50}'
    python benchmarks/bench_instructions.py chat '{"rooms": 50, "rate": 2, "seconds": 3}' --kinds plain chanctl
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


def server_argv(kind: str, port: int, presence_config: Path) -> tuple[list[str], str]:
    if kind == "plain":
        return [sys.executable, str(HERE / "plain_server.py"), str(port)], f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"
    from chanctl.tokens import TokenSigner

    config = presence_config if kind == "chanctl+presence" else HERE / "bench.yaml"
    token = TokenSigner(run.SECRET).mint(1, {})
    argv = [sys.executable, "-m", "chanctl", "serve", str(config), "--port", str(port), "--log-level", "warning"]
    return argv, f"ws://127.0.0.1:{port}/socket/websocket?token={token}&vsn=2.0.0"


def count(kind: str, mode: str, opts: dict, presence_config: Path, workdir: Path, settle: float) -> dict:
    port = run.free_port()
    argv, url = server_argv(kind, port, presence_config)
    out = workdir / f"callgrind.{kind}.{time.monotonic_ns()}"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    env = {**os.environ, "CHANCTL_SECRET": run.SECRET, "PYTHONPATH": str(run.ROOT)}
    proc = subprocess.Popen(run.pinned(0, valgrind + argv), cwd=run.ROOT, env=env,
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
        gen = subprocess.run(run.pinned(1, ["node", str(HERE / "loadgen.mjs"), json.dumps({"mode": mode, "url": url, **opts})]),
                             capture_output=True, text=True, timeout=1800)
        if gen.returncode != 0:
            raise SystemExit(f"loadgen failed against {kind}: {gen.stdout}\n{gen.stderr}")
        result = json.loads(gen.stdout.splitlines()[-1])
        time.sleep(settle)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(120)
    total = 0
    for dump in workdir.glob(out.name + "*"):
        found = re.search(r"^summary:\s+(\d+)", dump.read_text(errors="replace"), re.M)
        if found and dump.name != out.name:  # the on-demand dump, not the one written at exit
            total = max(total, int(found.group(1)))
    units = opts["n"] if mode == "connect" else result["delivered"]
    return {"instructions": total, "units": units, "per_unit": total / units, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["connect", "chat"])
    parser.add_argument("opts", help="loadgen.mjs options as JSON")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
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
            results[kind] = count(kind, args.mode, opts, presence_config, workdir, args.settle)
            print(f"# {kind}: {json.dumps(results[kind])}", file=sys.stderr, flush=True)
    unit = "connect+join" if args.mode == "connect" else "delivered message"
    print(f"{args.mode} {json.dumps(opts)}: server instructions per {unit} (callgrind)")
    base = results.get("plain")
    for kind, result in results.items():
        ratio = f"  plain/this {base['per_unit'] / result['per_unit']:.2f}x" if base else ""
        print(f"  {kind:18} {result['per_unit']:>12,.0f}{ratio}")


if __name__ == "__main__":
    main()
