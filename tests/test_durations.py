"""chanctl.durations: the human durations of tokens and the config."""

from __future__ import annotations

import math

import pytest

from chanctl.durations import format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("15m", 900), ("2h", 7200), ("14d", 1_209_600), ("2w", 1_209_600), ("250ms", 0.25),
    ("1.5h", 5400), (" 10 ", 10), (30, 30), (0.5, 0.5),
])
def test_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("value, message", [
    ("soon", "use e.g. 90s"), ("5y", "use e.g. 90s"), ("-5s", "use e.g. 90s"), (0, "positive"), (-1, "positive"),
    (True, "not a duration"), (math.inf, "finite"), (math.nan, "finite"),
])
def test_parse_refuses_with_a_reason(value, message):
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


@pytest.mark.parametrize("seconds, text", [(45, "45s"), (900, "15m"), (7500, "2h 5m"), (1_209_600, "14d"), (90061, "1d 1h")])
def test_format(seconds, text):
    assert format_duration(seconds) == text
