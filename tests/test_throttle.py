"""LogThrottle: a kind of log line a client can cause is written a bounded number of times."""

from __future__ import annotations

import logging

from chanctl.throttle import MAX_KINDS, LogThrottle


def records(throttle: LogThrottle, template: str, n: int) -> list[str]:
    passed = []
    for i in range(n):
        record = logging.LogRecord("chanctl.rules", logging.INFO, __file__, 1, template, (i,), None)
        if throttle.filter(record):
            passed.append(record.getMessage())
    return passed


def test_each_template_gets_its_burst_per_period_and_the_next_line_counts_what_was_dropped():
    now = [0.0]
    throttle = LogThrottle(burst=3, period=60, clock=lambda: now[0])
    assert records(throttle, "rule denied: %s", 10) == ["rule denied: 0", "rule denied: 1", "rule denied: 2"]
    assert records(throttle, "push_to failed: %s", 1) == ["push_to failed: 0"]  # another kind: its own budget
    now[0] = 59.9
    assert records(throttle, "rule denied: %s", 5) == []
    now[0] = 60.0
    assert records(throttle, "rule denied: %s", 1) == ["rule denied: 0 (and 12 more like it in the last 60 s, not logged)"]
    assert records(throttle, "rule denied: %s", 1) == ["rule denied: 0"]


def rule_failed(throttle: LogThrottle, source: object) -> bool:
    record = logging.LogRecord("chanctl.rules", logging.INFO, __file__, 1, "rule %r denied", (source,), None)
    record.throttle = source
    return throttle.filter(record)


def test_each_rule_named_in_extra_has_its_own_budget():
    throttle = LogThrottle(burst=1)
    assert [rule_failed(throttle, source) for source in ("a", "b", "a", "b")] == [True, True, False, False]


def test_the_oldest_kind_is_forgotten_past_max_kinds():
    throttle = LogThrottle(burst=1)
    assert rule_failed(throttle, "first") and not rule_failed(throttle, "first")
    assert all(rule_failed(throttle, i) for i in range(MAX_KINDS))
    assert rule_failed(throttle, "first")  # forgotten, so a fresh budget
