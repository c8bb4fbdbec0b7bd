"""``chanctl bench``: a load generator for any Phoenix Channels server.

:func:`run` takes a :class:`Plan` (the scenario and its sizes) and one token per client, starts the
worker processes, and returns what they measured; :func:`build_report` turns that into the JSON
report, with the thresholds checked. The workers' connections are :class:`BenchSocket`: websockets'
handshake, then frames read in place, with Phoenix frames coded by ``chanctl.protocol``.
"""

from chanctl.bench.plan import SCENARIOS, Plan
from chanctl.bench.report import Thresholds, build_report, render_table
from chanctl.bench.runner import run
from chanctl.bench.wire import BenchSocket

__all__ = ["SCENARIOS", "BenchSocket", "Plan", "Thresholds", "build_report", "render_table", "run"]
