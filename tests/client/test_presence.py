"""Client presence sync follows phoenix.js Presence.syncState/syncDiff (PROTOCOL.md §6)."""

from chanctl.client.presence import Presence, PresenceKeys, diff_keys


def meta(ref: str, **fields) -> dict:
    return {**fields, "phx_ref": ref}


def test_state_then_diffs_keyed_by_phx_ref():
    presence = Presence("room:1")
    [change] = presence.receive("presence_state", {"7": {"metas": [meta("a")]}})
    assert change.joins == {"7": {"metas": [meta("a")]}} and change.leaves == {}
    # A second tab of the same user: its meta is appended, the first kept.
    presence.receive("presence_diff", {"joins": {"7": {"metas": [meta("b")]}}, "leaves": {}})
    assert [m["phx_ref"] for m in presence.list()["7"]["metas"]] == ["a", "b"]
    # The join already in the state arrives again in a diff: harmless, keyed by phx_ref.
    assert presence.receive("presence_diff", {"joins": {"7": {"metas": [meta("a")]}}, "leaves": {}}) == []
    assert sorted(m["phx_ref"] for m in presence.list()["7"]["metas"]) == ["a", "b"]
    [left] = presence.receive("presence_diff", {"joins": {}, "leaves": {"7": {"metas": [meta("a"), meta("b")]}}})
    assert left.joins == {} and sorted(m["phx_ref"] for m in left.leaves["7"]["metas"]) == ["a", "b"]
    assert presence.list() == {}


def test_an_update_replaces_the_meta():
    presence = Presence("room:1")
    presence.receive("presence_state", {"7": {"metas": [meta("a", typing=False)]}})
    presence.receive("presence_diff", {"joins": {"7": {"metas": [meta("b", typing=True, phx_ref_prev="a")]}},
                                       "leaves": {"7": {"metas": [meta("a", typing=False)]}}})
    assert presence.list() == {"7": {"metas": [meta("b", typing=True, phx_ref_prev="a")]}}


def test_diffs_before_the_state_wait_for_it():
    presence = Presence("room:1")
    assert presence.receive("presence_diff", {"joins": {"8": {"metas": [meta("c")]}}, "leaves": {}}) == []
    changes = presence.receive("presence_state", {"7": {"metas": [meta("a")]}})
    assert [list(c.joins) for c in changes] == [["7"], ["8"]]
    assert set(presence.list()) == {"7", "8"}


def test_a_new_state_reports_who_left_while_away():
    presence = Presence("room:1")
    presence.receive("presence_state", {"7": {"metas": [meta("a")]}, "8": {"metas": [meta("c")]}})
    presence.reset()  # rejoined
    [change] = presence.receive("presence_state", {"7": {"metas": [meta("a")]}})
    assert change.joins == {} and list(change.leaves) == ["8"]
    assert list(presence.list()) == ["7"]


def test_an_update_reads_as_an_update_not_a_leave_and_a_join():
    presence = Presence("room:1")
    presence.receive("presence_state", {"7": {"metas": [meta("a", typing=False)]}, "9": {"metas": [meta("c")]}})
    [change] = presence.receive("presence_diff", {
        "joins": {"7": {"metas": [meta("b", typing=True, phx_ref_prev="a")]}, "8": {"metas": [meta("d")]}},
        "leaves": {"7": {"metas": [meta("a", typing=False)]}, "9": {"metas": [meta("c")]}}})
    assert change.keys == PresenceKeys(joined=("8",), updated=("7",), left=("9",))
    assert change.keys.describe() == "joined: 8; updated: 7; left: 9"
    assert diff_keys({"7": {}}, None).describe() == "joined: 7"
    assert diff_keys({}, {}).describe() == ""
