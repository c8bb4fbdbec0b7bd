"""A run's report: every parameter and figure as JSON, the same as a table, and the thresholds.

Each scenario names one rate and one latency as its headline, which ``--min-rate`` and
``--max-p99`` test: connect and reconnect joins a second and connect+join (or drop-to-rejoin)
latency, fan-out and chat deliveries a second and end-to-end latency, presence joins a second and
join-reply latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chanctl import __version__
from chanctl.bench.plan import Plan
from chanctl.bench.runner import Outcome
from chanctl.bench.stats import Histogram, Tally
from chanctl.escape import escape

__all__ = ["GENERATOR_BUSY", "Thresholds", "build_report", "exit_status", "render_table"]

GENERATOR_BUSY = 0.9
"""A worker busy this share of a core or more was (near) the limit: its figures bound the server from below."""

_RATE = {"connect": "joins_per_s", "reconnect": "rejoins_per_s", "fanout": "deliveries_per_s",
         "chat": "deliveries_per_s", "presence": "joins_per_s"}
_LATENCY = {"connect": "connect_join", "reconnect": "rejoin", "fanout": "delivery", "chat": "delivery", "presence": "join"}


_REFUSALS = ("refused:", "join refused:", "publisher: refused:", "publisher: join refused:")
"""Error reasons that are the server saying no (an HTTP status, a join reply), not a failure to reach it."""


@dataclass(frozen=True)
class Thresholds:
    max_p99_ms: float | None = None
    min_rate: float | None = None
    max_errors: int | None = None


def _per_s(count: float, start_us: int | None, end_us: int | None) -> float | None:
    if not start_us or not end_us or end_us <= start_us:
        return None
    return round(count / ((end_us - start_us) / 1e6), 1)


def _ms(start_us: int | None, end_us: int | None) -> float | None:
    return None if not start_us or not end_us or end_us < start_us else round((end_us - start_us) / 1000, 3)


def _figures(plan: Plan, outcome: Outcome) -> dict[str, Any]:
    setup = outcome.get("setup", {"connected": 0, "joined": 0})
    results = outcome.get("results", [])
    counters = [r["counters"] for r in results]
    delivered = sum(c.get("delivered", 0) for c in counters)
    start, end = outcome.get("start"), outcome.get("end")
    scenario = plan.scenario
    if scenario == "connect":
        joined = sum(c.get("joined", 0) for c in counters)
        return {"clients": plan.clients, "connected": sum(c.get("connected", 0) for c in counters), "joined": joined,
                "joins_per_s": _per_s(joined, start, end), "elapsed_ms": _ms(start, end)}
    if scenario == "reconnect":
        rejoined = sum(r.get("rejoined", 0) for r in results)
        recovery = Tally()
        for r in results:
            recovery.merge(r.get("recovery", {}))
        asked = recovery.get("recovered", 0) + recovery.get("not_recovered", 0)
        return {"clients": plan.clients, "joined_before": setup["joined"], "dropped": outcome.get("dropped", 0),
                "rejoined": rejoined, "all_rejoined_ms": _ms(start, end), "rejoins_per_s": _per_s(rejoined, start, end),
                "recovered": recovery.get("recovered", 0) if asked else None,
                "not_recovered": recovery.get("not_recovered", 0) if asked else None}
    if scenario == "fanout":
        subscribers = sum(r.get("subscribers", 0) for r in results)
        sent, refused = outcome.get("sent", 0), outcome.get("refused", 0)
        expected = subscribers * (sent - refused)
        return {"subscribers": subscribers, "sent": sent, "publish_refused": refused, "deliveries": delivered,
                "expected": expected, "delivered_ratio": round(delivered / expected, 6) if expected else None,
                "deliveries_per_s": _per_s(delivered, start, end), "elapsed_ms": _ms(start, end)}
    if scenario == "chat":
        sent = sum(c.get("sent", 0) for c in counters)
        members = sum(r.get("members", 0) for r in results)
        expected = sent * plan.members
        return {"members_joined": members, "sent": sent, "deliveries": delivered, "expected": expected,
                "delivered_ratio": round(delivered / expected, 6) if expected else None,
                "deliveries_per_s": _per_s(delivered, start, end), "elapsed_ms": _ms(start, end)}
    frames = sum(r.get("frames", 0) for r in results)
    size = sum(r.get("bytes", 0) for r in results)
    total = plan.total_clients()
    joined = outcome["histograms"].get("join", Histogram()).count if "histograms" in outcome else 0
    return {"clients": total, "connected": setup["connected"], "joined": joined, "keys": outcome.get("keys"),
            "all_lists_right_after_joins_ms": _ms(start, outcome.get("join_settled")),
            "leavers": outcome.get("leavers"),
            "all_lists_right_after_leaves_ms": _ms(outcome.get("leave_start"), outcome.get("leave_settled")),
            "frames_per_client": round(frames / total, 1) if total else None,
            "bytes_per_client": round(size / total, 1) if total else None,
            "joins_per_s": _per_s(joined, start, outcome.get("join_settled"))}


def build_report(plan: Plan, outcome: Outcome, thresholds: Thresholds) -> dict[str, Any]:
    """The JSON report; ``exit_code`` follows README's table (see :func:`exit_status`)."""
    histograms: dict[str, Histogram] = outcome.get("histograms", {})
    figures = _figures(plan, outcome)
    latency = {name: histogram.summary_ms() for name, histogram in sorted(histograms.items())}
    errors = dict(sorted(outcome.get("errors", {}).items(), key=lambda item: -item[1]))
    cpu = outcome.get("cpu", [])
    generator = {
        "workers": plan.workers,
        "loop": outcome.get("loop"),
        "per_worker": cpu,
        "coordinator_cpu_s": outcome.get("coordinator_cpu_s"),
        "cpu_s": round(sum(w["cpu_s"] for w in cpu) + (outcome.get("coordinator_cpu_s") or 0), 3),
        "busiest_cpu_share": max((w["cpu_share"] for w in cpu), default=None),
    }
    generator["was_the_limit"] = (generator["busiest_cpu_share"] or 0) >= GENERATOR_BUSY
    headline = histograms.get(_LATENCY[plan.scenario])
    rate = figures.get(_RATE[plan.scenario])
    p99 = headline.summary_ms()["p99_ms"] if headline is not None and headline.count else None
    checks = []
    if thresholds.max_p99_ms is not None:
        checks.append({"name": "max_p99_ms", "limit": thresholds.max_p99_ms, "value": p99,
                       "ok": p99 is not None and p99 <= thresholds.max_p99_ms})
    if thresholds.min_rate is not None:
        checks.append({"name": "min_rate", "limit": thresholds.min_rate, "value": rate,
                       "ok": rate is not None and rate >= thresholds.min_rate})
    if thresholds.max_errors is not None:
        count = sum(errors.values())
        checks.append({"name": "max_errors", "limit": thresholds.max_errors, "value": count,
                       "ok": count <= thresholds.max_errors})
    report = {
        "chanctl": __version__,
        "scenario": plan.scenario,
        "started_at": datetime.fromtimestamp(outcome.get("started_at", 0), UTC).isoformat(timespec="seconds"),
        "parameters": plan.parameters(),
        "complete": bool(outcome.get("complete")),
        "headline": {"rate_name": _RATE[plan.scenario], "rate": rate, "p99_ms": p99,
                     "latency_name": _LATENCY[plan.scenario]},
        "figures": figures,
        "latency_ms": latency,
        "errors": errors,
        "generator": generator,
        "thresholds": checks,
    }
    report["exit_code"] = exit_status(report)
    return report


def exit_status(report: dict[str, Any]) -> int:
    """0 ok; 1 a threshold missed; 3 nothing got in because the server refused; 4 nothing got in
    because it was unreachable, or the run hit ``--time-limit`` before it finished."""
    figures, errors = report["figures"], report["errors"]
    joined = max(figures.get(key) or 0 for key in ("joined", "subscribers", "members_joined", "rejoined", "joined_before"))
    if not joined and errors:
        refused = sum(n for reason, n in errors.items() if reason.startswith(_REFUSALS))
        return 3 if refused >= sum(errors.values()) - refused else 4
    if not report["complete"]:
        return 4
    if any(not check["ok"] for check in report["thresholds"]):
        return 1
    return 0


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.3f}".rstrip("0").rstrip(".") if value < 100 else f"{value:,.0f}"
    return f"{int(value):,}"


def render_table(report: dict[str, Any]) -> str:
    """The report for a terminal; server-chosen text (error reasons) is escaped."""
    params, figures = report["parameters"], report["figures"]
    lines = [f"chanctl bench {report['scenario']} against {', '.join(params['urls'])}"
             + ("" if report["complete"] else "  (incomplete: stopped before the end)")]
    for key, value in figures.items():
        lines.append(f"  {key.replace('_', ' '):<34} {_number(value)}")
    for name, summary in report["latency_ms"].items():
        if summary["count"]:
            lines.append(f"  {name.replace('_', ' ') + ' latency ms':<34} p50 {_number(summary['p50_ms'])}  p90 {_number(summary['p90_ms'])}"
                         f"  p99 {_number(summary['p99_ms'])}  max {_number(summary['max_ms'])}  (n={summary['count']:,})")
    if report["errors"]:
        lines.append(f"  {'errors':<34} {sum(report['errors'].values()):,}")
        for reason, n in list(report["errors"].items())[:10]:
            lines.append(f"    {n:>8,}  {escape(reason)}")
    else:
        lines.append(f"  {'errors':<34} none")
    generator = report["generator"]
    share = generator["busiest_cpu_share"]
    line = f"  {'generator CPU':<34} {generator['cpu_s']:.2f} s ({generator['workers']} worker(s) on {generator['loop']}, and the coordinator), busiest worker {_number(share)} of a core"
    lines.append(line)
    if generator["was_the_limit"]:
        lines.append("  note: a worker used most of its core: the generator may have been the limit (try --workers)")
    for check in report["thresholds"]:
        verdict = "ok" if check["ok"] else "MISSED"
        lines.append(f"  threshold {check['name']:<24} {_number(check['value'])} vs {_number(check['limit'])}: {verdict}")
    return "\n".join(lines)
