"""History and recovery, sans-I/O: numbering, bounds, all-or-nothing (with an injected clock)."""

from __future__ import annotations

from chanctl.pubsub.history import META_TTL, History, HistorySpec


def make(size: int = 3, ttl: float = 60.0):
    now = [0.0]
    specs = {"room:1": HistorySpec(size, ttl), "room:2": HistorySpec(size, ttl)}
    asked: list[str] = []

    def spec_for(topic: str) -> HistorySpec | None:
        asked.append(topic)
        return specs.get(topic)

    return History(spec_for, clock=lambda: now[0]), now, asked


def test_broadcasts_are_numbered_per_topic_within_an_epoch():
    history, _, asked = make()
    one = history.record("room:1", "new_msg", {"body": "a"})
    two = history.record("room:1", "new_msg", {"body": "b"})
    other = history.record("room:2", "new_msg", {"body": "c"})
    assert (one["offset"], two["offset"], other["offset"]) == (1, 2, 1)
    assert one["epoch"] == two["epoch"] != other["epoch"]
    assert one["body"] == "a"
    plain = {"body": "x"}
    assert history.record("lobby", "new_msg", plain) is plain
    assert history.record("lobby", "new_msg", plain) is plain
    assert asked.count("lobby") == 1  # the router is asked once per topic
    # Presence is state, binary has no room for an offset: neither is numbered.
    diff = {"joins": {}, "leaves": {}}
    assert history.record("room:1", "presence_diff", diff) is diff
    assert history.record("room:1", "blob", b"\x01") == b"\x01"
    assert history.record("room:1", "new_msg", {})["offset"] == 3


def test_a_join_since_gets_exactly_the_missed_broadcasts_or_nothing():
    history, _, _ = make(size=3)
    epoch = history.join("room:1", {}).epoch
    for n in range(1, 5):
        history.record("room:1", "new_msg", {"n": n})
    position = history.join("room:1", {})
    assert (position.epoch, position.offset, position.recovered, position.missed) == (epoch, 4, None, [])
    recovery = history.join("room:1", {"since": {"offset": 2, "epoch": epoch}})
    assert recovery.recovered is True and [p["n"] for _, p in recovery.missed] == [3, 4]
    assert recovery.reply() == {"epoch": epoch, "offset": 4, "recovered": True}
    assert history.join("room:1", {"since": {"offset": 4, "epoch": epoch}}).missed == []
    # Offset 1 is no longer kept (size 3): all or nothing.
    gap = history.join("room:1", {"since": {"offset": 0, "epoch": epoch}})
    assert (gap.recovered, gap.missed) == (False, [])
    assert history.join("room:1", {"since": {"offset": 1, "epoch": epoch}}).recovered is True
    for since in ({"offset": 2, "epoch": "other"}, {"offset": 9, "epoch": epoch}, {"offset": -1, "epoch": epoch}):
        assert history.join("room:1", {"since": since}).recovered is False
    # No epoch: the current one.
    assert [p["n"] for _, p in history.join("room:1", {"since": {"offset": 3}}).missed] == [4]
    bad = history.join("room:1", {"since": {"offset": "3"}})
    assert bad.recovered is False and bad.reply()["since_error"].startswith("since takes")
    assert (history.stats.recovered, history.stats.failed, history.stats.replayed) == (4, 5, 6)
    assert history.join("lobby", {"since": {"offset": 1}}) is None


def test_entries_expire_after_the_ttl_and_quiet_topics_are_dropped():
    history, now, _ = make(size=10, ttl=60.0)
    epoch = history.join("room:1", {}).epoch
    history.record("room:1", "new_msg", {"n": 1})
    now[0] = 30.0
    history.record("room:1", "new_msg", {"n": 2})
    now[0] = 61.0
    assert history.join("room:1", {"since": {"offset": 0, "epoch": epoch}}).recovered is False
    assert [p["n"] for _, p in history.join("room:1", {"since": {"offset": 1, "epoch": epoch}}).missed] == [2]
    now[0] = 100.0
    # Everything expired, but the numbering stays: a client that saw offset 2 missed nothing.
    assert history.join("room:1", {"since": {"offset": 2, "epoch": epoch}}).recovered is True
    history.sweep()
    assert history.topics() == 1
    now[0] = 100.0 + META_TTL + 1
    history.sweep()
    assert history.topics() == 0
    assert history.join("room:1", {}).epoch != epoch

