"""The pure presence state: track, update, untrack, list, diffs, refs, node parts, batching."""

import copy
import itertools
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanctl.errors import PresenceError
from chanctl.presence.state import Diff, TopicPresence, new_ref


def refs():
    counter = itertools.count(1)
    return lambda: f"R{next(counter)}"


def sync_diff(state, diff):
    """phoenix.js ``Presence.syncDiff`` (PROTOCOL.md §6): joins first, then leaves, keyed by phx_ref."""
    state = copy.deepcopy(state)
    for key, joined in diff["joins"].items():
        current = state.get(key)
        state[key] = copy.deepcopy(joined)
        if current:
            joined_refs = {m["phx_ref"] for m in joined["metas"]}
            state[key]["metas"][:0] = [m for m in current["metas"] if m["phx_ref"] not in joined_refs]
    for key, left in diff["leaves"].items():
        current = state.get(key)
        if not current:
            continue
        gone = {m["phx_ref"] for m in left["metas"]}
        current["metas"] = [m for m in current["metas"] if m["phx_ref"] not in gone]
        if not current["metas"]:
            del state[key]
    return state


def test_track_lists_and_diffs_in_phoenix_format():
    p = TopicPresence(refs())
    meta, diff = p.track("n1", "c1", "7", {"online_at": 1, "typing": False})
    assert meta == {"online_at": 1, "typing": False, "phx_ref": "R1"}
    assert p.list() == {"7": {"metas": [meta]}}
    assert diff.payload() == {"joins": {"7": {"metas": [meta]}}, "leaves": {}}


def test_two_sessions_of_one_key_are_two_metas_and_the_diff_carries_only_the_new_one():
    p = TopicPresence(refs())
    first, _ = p.track("n1", "c1", "7", {"s": 1})
    second, diff = p.track("n1", "c2", "7", {"s": 2})
    assert p.list() == {"7": {"metas": [first, second]}}
    assert first["phx_ref"] != second["phx_ref"]
    assert diff.payload() == {"joins": {"7": {"metas": [second]}}, "leaves": {}}
    assert len(p) == 1 and p.sessions == 2


def test_update_leaves_the_old_meta_and_joins_the_new_with_phx_ref_prev():
    p = TopicPresence(refs())
    old, _ = p.track("n1", "c1", "7", {"typing": False})
    new, diff = p.update("n1", "c1", "7", lambda m: {**m, "typing": True})
    assert new == {"typing": True, "phx_ref": "R2", "phx_ref_prev": "R1"}
    assert diff.payload() == {"joins": {"7": {"metas": [new]}}, "leaves": {"7": {"metas": [old]}}}
    again, _ = p.update("n1", "c1", "7", {"typing": False, "phx_ref": "forged"})
    assert again == {"typing": False, "phx_ref": "R3", "phx_ref_prev": "R2"}
    assert p.list() == {"7": {"metas": [again]}}


def test_untrack_leaves_with_the_current_meta():
    p = TopicPresence(refs())
    p.track("n1", "c1", "7", {})
    current, _ = p.update("n1", "c1", "7", {"away": True})
    diff = p.untrack("n1", "c1")
    assert diff.payload() == {"joins": {}, "leaves": {"7": {"metas": [current]}}}
    assert p.list() == {} and p.sessions == 0 and p.parts == {}
    assert not p.untrack("n1", "c1")  # a no-op when nothing is tracked


def test_untrack_one_key_keeps_the_others_of_that_owner():
    p = TopicPresence(refs())
    p.track("n1", "c1", "7", {})
    kept, _ = p.track("n1", "c1", "bot", {})
    p.untrack("n1", "c1", "7")
    assert p.list() == {"bot": {"metas": [kept]}}
    assert p.keys_of("n1", "c1") == ["bot"]


def test_errors_already_tracked_and_nopresence():
    p = TopicPresence(refs())
    p.track("n1", "c1", "7", {})
    with pytest.raises(PresenceError) as info:
        p.track("n1", "c1", "7", {})
    assert info.value.reason == "already_tracked"
    p.track("n1", "c2", "7", {})  # another owner may track the same key
    with pytest.raises(PresenceError) as info:
        p.update("n1", "c3", "7", {})
    assert info.value.reason == "nopresence"


def test_node_parts_merge_and_a_dropped_node_leaves():
    p = TopicPresence(refs())
    local, _ = p.track("n1", "c1", "7", {})
    remote = {("c9", "7"): {"phx_ref": "X1"}, ("c9", "8"): {"phx_ref": "X2"}}
    diff = p.replace_part("n2", remote)
    assert diff.payload() == {"joins": {"7": {"metas": [{"phx_ref": "X1"}]}, "8": {"metas": [{"phx_ref": "X2"}]}}, "leaves": {}}
    assert p.list() == {"7": {"metas": [local, {"phx_ref": "X1"}]}, "8": {"metas": [{"phx_ref": "X2"}]}}
    # The peer's next part: 8 updated, 7 gone.
    diff = p.replace_part("n2", {("c9", "8"): {"phx_ref": "X3", "phx_ref_prev": "X2"}})
    assert diff.payload() == {
        "joins": {"8": {"metas": [{"phx_ref": "X3", "phx_ref_prev": "X2"}]}},
        "leaves": {"7": {"metas": [{"phx_ref": "X1"}]}, "8": {"metas": [{"phx_ref": "X2"}]}},
    }
    assert p.drop_node("n2").payload()["leaves"] == {"8": {"metas": [{"phx_ref": "X3", "phx_ref_prev": "X2"}]}}
    assert p.list() == {"7": {"metas": [local]}}
    assert p.part("n1") == {("c1", "7"): local}


def test_new_ref_is_16_url_safe_characters_and_unique():
    made = {new_ref() for _ in range(1000)}
    assert len(made) == 1000
    assert all(len(r) == 16 and set(r) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for r in made)


def test_a_meta_that_left_and_came_back_in_one_batch_is_sent_as_a_join_only():
    """A peer node down and back inside one window: phoenix.js applies joins before leaves, so a
    diff with both would drop the presence from every client that had it."""
    p = TopicPresence(refs())
    remote = {("c9", "9"): {"phx_ref": "REMOTE1"}}
    p.replace_part("n2", remote)
    batch = Diff()
    batch.add(p.drop_node("n2"))
    batch.add(p.replace_part("n2", remote))
    assert batch.payload() == {"joins": {"9": {"metas": [{"phx_ref": "REMOTE1"}]}}, "leaves": {}}


def test_a_meta_joined_and_left_in_one_batch_is_sent_as_a_leave_only():
    p = TopicPresence(refs())
    batch = Diff()
    meta, diff = p.track("n1", "c1", "7", {})
    batch.add(diff)
    batch.add(p.untrack("n1", "c1"))
    assert batch.payload() == {"joins": {}, "leaves": {"7": {"metas": [meta]}}}


ops = st.lists(
    st.tuples(
        st.sampled_from(["track", "update", "untrack", "peer_up", "peer_down"]),
        st.sampled_from(["c1", "c2", "c3", "c4"]),
        st.sampled_from(["a", "b"]),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(before=ops, during=ops)
def test_a_batched_diff_brings_every_snapshot_taken_in_the_batch_to_the_final_state(before, during):
    """The batching contract: whatever state a client saw mid-batch, the combined diff completes it."""
    p = TopicPresence(refs())

    def apply(op, owner, key):
        try:
            if op == "track":
                return p.track("n1", owner, key, {"o": owner})[1]
            if op == "update":
                return p.update("n1", owner, key, lambda m: {**m, "n": m.get("n", 0) + 1})[1]
            if op == "peer_up":  # a peer node's presence, re-sent with its own phx_ref when it returns
                return p.replace_part("n2", {("p1", key): {"phx_ref": f"REMOTE-{key}"}})
            if op == "peer_down":
                return p.drop_node("n2")
            return p.untrack("n1", owner, key)
        except PresenceError:
            return Diff()

    for op in before:
        apply(*op)
    snapshots = [p.list()]
    batch = Diff()
    for op in during:
        batch.add(apply(*op))
        snapshots.append(p.list())
    final = p.list()

    def normal(state):
        return {k: sorted(m["phx_ref"] for m in v["metas"]) for k, v in state.items()}

    for snapshot in snapshots:
        assert normal(sync_diff(snapshot, batch.payload())) == normal(final)


def test_the_state_is_pure():
    code = "import sys, chanctl.presence.state; print(sorted(m for m in ('asyncio', 'websockets', 'socket') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
