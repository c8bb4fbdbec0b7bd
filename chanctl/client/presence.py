"""Client-side presence sync with phoenix.js ``Presence`` semantics (PROTOCOL.md §6).

The server sends ``presence_state`` (the whole list) after each join, then ``presence_diff``s.
Entries are keyed by user key; metas are told apart by ``phx_ref``, so merging the same join twice
(once in the state, once in a diff) is harmless. Diffs that arrive before the state of the current
join are held back and applied once it arrives, as phoenix.js does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Presence", "PresenceChange", "PresenceKeys", "diff_keys"]

PresenceMap = dict[str, dict[str, Any]]
"""``{key: {"metas": [meta, ...], ...}}``, Phoenix's ``list(topic)`` format."""


@dataclass(frozen=True)
class PresenceKeys:
    """The keys of a presence diff, as a person reads it: who came, who changed, who went."""

    joined: tuple[str, ...]
    updated: tuple[str, ...]
    """Keys in both the joins and the leaves: Phoenix sends an update (``typing``) as a leave of
    the old meta and a join of the new one (``phx_ref_prev``), and the key never went away."""
    left: tuple[str, ...]

    def describe(self) -> str:
        """``joined: 7; updated: 42; left: 9`` (only the parts that have keys; empty if none)."""
        parts = [(label, keys) for label, keys in (("joined", self.joined), ("updated", self.updated),
                                                    ("left", self.left)) if keys]
        return "; ".join(f"{label}: {', '.join(keys)}" for label, keys in parts)


def diff_keys(joins: Mapping[str, Any] | None, leaves: Mapping[str, Any] | None) -> PresenceKeys:
    """Sort a diff's keys into joined, updated (in both) and left, each in the diff's order."""
    joins, leaves = joins or {}, leaves or {}
    return PresenceKeys(
        joined=tuple(str(key) for key in joins if key not in leaves),
        updated=tuple(str(key) for key in joins if key in leaves),
        left=tuple(str(key) for key in leaves if key not in joins),
    )


@dataclass(frozen=True)
class PresenceChange:
    """What one ``presence_state`` or ``presence_diff`` changed: the metas that joined and left."""

    topic: str
    joins: PresenceMap
    leaves: PresenceMap

    @property
    def keys(self) -> PresenceKeys:
        """The keys that joined, were updated, and left (see :func:`diff_keys`)."""
        return diff_keys(self.joins, self.leaves)


def _refs(presence: dict[str, Any]) -> set[Any]:
    return {meta.get("phx_ref") for meta in presence.get("metas", [])}


@dataclass
class Presence:
    """The presence list of one channel, kept in sync from the server's events."""

    topic: str
    state: PresenceMap = field(default_factory=dict)
    _synced: bool = False
    _pending: list[dict[str, Any]] = field(default_factory=list)

    def list(self) -> PresenceMap:
        return self.state

    def reset(self) -> None:
        """A new join: wait for its ``presence_state`` before applying diffs again."""
        self._synced = False
        self._pending.clear()

    def receive(self, event: str, payload: Any) -> list[PresenceChange]:
        """Apply a ``presence_state`` / ``presence_diff`` payload; returns the changes it made (none
        for a diff held back until the state, or one that repeats what is known)."""
        if not isinstance(payload, dict):
            return []
        if event == "presence_state":
            changes = [self._sync_state(payload)]
            self._synced = True
            changes += [self._sync_diff(diff) for diff in self._pending]
            self._pending.clear()
        elif not self._synced:
            self._pending.append(payload)
            return []
        else:
            changes = [self._sync_diff(payload)]
        return [change for change in changes if change is not None]

    def _sync_state(self, new: PresenceMap) -> PresenceChange | None:
        joins: PresenceMap = {}
        leaves: PresenceMap = {key: presence for key, presence in self.state.items() if key not in new}
        for key, presence in new.items():
            current = self.state.get(key)
            if current is None:
                joins[key] = presence
                continue
            new_refs, cur_refs = _refs(presence), _refs(current)
            joined = [m for m in presence.get("metas", []) if m.get("phx_ref") not in cur_refs]
            left = [m for m in current.get("metas", []) if m.get("phx_ref") not in new_refs]
            if joined:
                joins[key] = {**presence, "metas": joined}
            if left:
                leaves[key] = {**current, "metas": left}
        return self._sync_diff({"joins": joins, "leaves": leaves})

    def _sync_diff(self, diff: dict[str, Any]) -> PresenceChange | None:
        """Apply ``diff`` as phoenix.js's ``syncDiff``; the change reports only metas that were new
        or removed, so a join seen in both the state and a diff is reported once."""
        joins: PresenceMap = {}
        leaves: PresenceMap = {}
        for key, presence in (diff.get("joins") or {}).items():
            current = self.state.get(key)
            entry = copy.deepcopy(presence)
            entry.setdefault("metas", [])
            known = _refs(current) if current is not None else set()
            new = [m for m in entry["metas"] if m.get("phx_ref") not in known]
            if new:
                joins[key] = {**entry, "metas": new}
            if current is not None:
                joined = _refs(entry)
                entry["metas"][:0] = [m for m in current.get("metas", []) if m.get("phx_ref") not in joined]
            self.state[key] = entry
        for key, presence in (diff.get("leaves") or {}).items():
            current = self.state.get(key)
            if current is None:
                continue
            gone = _refs(presence)
            removed = [m for m in current.get("metas", []) if m.get("phx_ref") in gone]
            if removed:
                leaves[key] = {**current, "metas": removed}
            current["metas"] = [m for m in current.get("metas", []) if m.get("phx_ref") not in gone]
            if not current["metas"]:
                del self.state[key]
        return PresenceChange(self.topic, joins, leaves) if joins or leaves else None
