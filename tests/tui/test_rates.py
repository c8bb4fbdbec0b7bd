"""Per-topic rates from the sampled traffic tail, and the plots' bars: pure, no app."""

from __future__ import annotations

import pytest

from chanctl.tui.rates import HISTORY, ServerSeries, TopicRates
from chanctl.tui.widgets.graph import bars


def entry(topic: str, direction: str, recipients: int = 1) -> dict:
    return {"topic": topic, "dir": direction, "recipients": recipients}


def test_rates_are_exact_while_the_tap_keeps_everything():
    rates = TopicRates()
    rates.tick(100.0)
    rates.add_batch({"entries": [entry("a", "in"), entry("a", "out", 3), entry("b", "in")], "dropped": 0})
    rates.add_batch({"entries": [entry("a", "in")], "dropped": 0})
    rates.tick(101.0)
    assert rates.rates == {"a": (2.0, 3.0), "b": (1.0, 0.0)}
    rates.tick(103.0)  # two quiet seconds: no rates, a zero in each history
    assert rates.rates == {} and list(rates.history["a"]) == [(2.0, 3.0), (0.0, 0.0)]
    assert rates.quiet == {"a": 1, "b": 1}


def test_a_sampled_tick_scales_each_entry_by_what_the_tap_left_out():
    rates = TopicRates()
    rates.add_batch({"entries": [entry("a", "in")], "dropped": 10})  # no baseline yet: counted as is
    rates.tick(1.0)
    rates.add_batch({"entries": [entry("a", "in"), entry("b", "out", 2)], "dropped": 16})  # 2 kept of 8
    rates.tick(2.0)
    assert rates.rates == {"a": (4.0, 0.0), "b": (0.0, 8.0)}


def test_histories_are_bounded_and_forgotten_with_their_topic():
    rates = TopicRates()
    for second in range(HISTORY + 10):
        rates.add_batch({"entries": [entry("a", "in")], "dropped": 0})
        rates.tick(float(second))
    assert len(rates.history["a"]) == HISTORY
    rates.forget("a")
    assert "a" not in rates.history and "a" not in rates.quiet


def test_server_series_keep_the_stats_figures():
    series = ServerSeries()
    series.add({"messages_in_per_s": 2.5, "connections": 3, "broadcasts_per_s": True})
    assert series.values["messages_in_per_s"][-1] == 2.5 and series.values["connections"][-1] == 3.0
    assert series.values["broadcasts_per_s"][-1] == 0.0 and series.values["messages_out_per_s"][-1] == 0.0


@pytest.mark.parametrize(("values", "width", "drawn"), [
    ([], 4, "    "),
    ([0, 0], 4, "  ▁▁"),
    ([1, 2, 4, 8], 4, "▂▃▅█"),
    ([8, 8], 3, " ██"),  # a steady rate is a full line: the scale starts at zero
    ([1, 2, 3, 100, 5, 6], 2, "▇█"),  # only what fits is shown, and scaled
])
def test_bars_start_at_zero_and_put_the_newest_value_last(values, width, drawn):
    assert bars(values, width) == drawn
