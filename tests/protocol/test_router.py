"""chanctl.protocol.router: topic patterns, captures, and most-specific-first matching."""

from __future__ import annotations

import pytest

from chanctl.protocol.router import Router, TopicPattern


@pytest.mark.parametrize("source, topic, captures", [
    ("room:lobby", "room:lobby", {}),
    ("room:{id}", "room:42", {"id": "42"}),
    ("room:{id}", "room:42:x", None),  # a capture is one segment
    ("game:{id}:{player}", "game:7:ann", {"id": "7", "player": "ann"}),
    ("room:*", "room:a:b", {}),
    ("room:*", "room:", {}),
    ("room:*", "lobby", None),
    ("notifications:user_{uid}", "notifications:user_9", {"uid": "9"}),
    ("updates:all", "updates:all\n", None),  # issue 16: `$` let a trailing newline make another topic
    ("room:{id}", "room:42\n", {"id": "42\n"}),  # the newline is part of the capture, never dropped
])
def test_a_pattern_matches_and_captures(source, topic, captures):
    assert TopicPattern.parse(source).match(topic) == captures


@pytest.mark.parametrize("source, message", [
    ("", "cannot be empty"),
    ("room:*:x", "'*' may only end a pattern"),
    ("room:{id}:{id}", "appears twice"),
    ("room:{name}", "reserved"),
    ("room:{1x}", "a capture is written {name}"),
    ("room:{id", "a capture is written {name}"),
])
def test_a_bad_pattern_says_what_is_wrong(source, message):
    with pytest.raises(ValueError, match=message):
        TopicPattern.parse(source)


def test_the_most_specific_pattern_wins_whatever_the_order():
    router: Router[str] = Router()
    for source in ("room:*", "room:{id}", "room:lobby"):
        router.add(source, source)
    assert router.match("room:lobby").target == "room:lobby"
    route = router.match("room:42")
    assert (route.target, route.captures, route.topic) == ("room:{id}", {"id": "42"}, "room:42")
    assert router.match("room:a:b").target == "room:*"
    assert router.match("lobby") is None


def test_shadowed_names_a_pattern_that_can_never_match():
    router: Router[None] = Router()
    router.add("room:*", None)
    router.add("room:{id}*", None)
    router.add("game:{id}", None)
    assert [(earlier.source, later.source) for earlier, later in router.shadowed()] == [("room:*", "room:{id}*")]
