"""CPU of one rule the CEL library evaluates over a small and a huge event payload, for one checkout.

    python benchmarks/bench_rule_input.py [--root CHECKOUT]

The rule is a macro (``payload.items.all(i, i.n < 10)``), outside the compiled subset, so the
library converts what it reads on every evaluation. Run it with ``--root`` on a checkout from
before MAX_LIBRARY_INPUT (a ``git archive``) and on this one to compare: the huge payload (120,000
objects, 960 KB of JSON) was evaluated in about 0.4 s of CPU; now it is refused unread.
Medians of 5, process CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout measured (default: this one)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root))
    from chanctl.rules import EVENT_VARIABLES, compile_rule

    rule = compile_rule("payload.items.all(i, i.n < 10)", EVENT_VARIABLES)
    for count, label in ((10, "10 objects"), (120_000, "120,000 objects (960 KB)")):
        variables = {"user": {"id": 1}, "topic": {"name": "t"}, "params": {}, "payload": {"items": [{"n": 1}] * count}, "data": {}}
        times, outcome = [], None
        for _ in range(5):
            started = time.process_time()
            try:
                outcome = rule.allows(variables)
            except Exception as exc:  # RuleInputTooLarge where the bound exists
                outcome = type(exc).__name__
            times.append(time.process_time() - started)
        print(f"{label}: {outcome}, median {statistics.median(times) * 1000:.3f} ms CPU")


if __name__ == "__main__":
    main()
