"""Presence state of one topic, pure: track, update, untrack, list and diffs in Phoenix's format.

No I/O and no clock: every operation returns the :class:`Diff` it caused, and the tracker decides
when to send it. The wire shapes are those phoenix.js ``Presence`` consumes (PROTOCOL.md §6)::

    list   {key: {"metas": [{...meta, "phx_ref": R}, ...]}}
    diff   {"joins": {key: {"metas": [...]}}, "leaves": {key: {"metas": [...]}}}

**Shape, ready for many nodes.** A :class:`TopicPresence` keeps its entries in *parts*, one per node::

    parts = {node_id: {(owner_id, key): meta}}

where ``owner_id`` names one channel incarnation on that node (Phoenix's tracked pid) and ``meta``
carries its own ``phx_ref`` (unique across nodes: 16 random url-safe characters). A node only ever
writes its own part (``track``/``update``/``untrack``); a replication layer ships a node's part
(:meth:`TopicPresence.part`) to its peers, which install it with :meth:`TopicPresence.replace_part`
or remove it with :meth:`TopicPresence.drop_node`, and each gets back the diff to send to its own
subscribers. ``list`` merges every part: metas are keyed by ``phx_ref``, so merging is order-free.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chanctl.errors import PresenceError

__all__ = ["Diff", "Meta", "TopicPresence", "new_ref"]

Meta = dict[str, Any]
"""A presence's metadata as sent: the user fields plus ``phx_ref`` (and ``phx_ref_prev`` after an update)."""

_RESERVED = ("phx_ref", "phx_ref_prev")


def new_ref() -> str:
    """A fresh ``phx_ref``: 16 url-safe characters, unique across nodes without coordination."""
    return base64.urlsafe_b64encode(os.urandom(12)).decode()


@dataclass
class Diff:
    """Joins and leaves by key and ``phx_ref``; several diffs :meth:`add` up to one.

    Combining keeps a property phoenix.js relies on when diffs are batched: applying the combined
    diff to *any* state a client saw during the batch (its ``presence_state`` may have been taken
    half-way) ends in the same state. So a meta that joined and left within the batch is sent as a
    leave only (a client that saw it must drop it; for one that did not, the leave is a no-op), and
    one that left and came back (a peer node's presence, same ``phx_ref``) as a join only (phoenix.js
    applies joins before leaves, so sending both would drop it).
    """

    joins: dict[str, dict[str, Meta]] = field(default_factory=dict)
    leaves: dict[str, dict[str, Meta]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.joins or self.leaves)

    def join(self, key: str, meta: Meta) -> None:
        ref = meta["phx_ref"]
        left = self.leaves.get(key)
        if left is not None and left.pop(ref, None) is not None and not left:
            del self.leaves[key]
        self.joins.setdefault(key, {})[ref] = meta

    def leave(self, key: str, meta: Meta) -> None:
        ref = meta["phx_ref"]
        joined = self.joins.get(key)
        if joined is not None and joined.pop(ref, None) is not None and not joined:
            del self.joins[key]
        self.leaves.setdefault(key, {})[ref] = meta

    def add(self, later: Diff) -> None:
        """Append ``later`` (which happened after this diff) to this one."""
        for key, metas in later.joins.items():
            for meta in metas.values():
                self.join(key, meta)
        for key, metas in later.leaves.items():
            for meta in metas.values():
                self.leave(key, meta)

    def payload(self) -> dict[str, Any]:
        """The ``presence_diff`` payload; both ``joins`` and ``leaves`` are always present."""
        return {
            "joins": {key: {"metas": list(metas.values())} for key, metas in self.joins.items()},
            "leaves": {key: {"metas": list(metas.values())} for key, metas in self.leaves.items()},
        }


class TopicPresence:
    """The presences of one topic, kept in node-tagged parts (see the module docstring).

    Args:
        make_ref: the ``phx_ref`` factory (tests pass a predictable one).
    """

    def __init__(self, make_ref: Callable[[], str] = new_ref):
        self.parts: dict[str, dict[tuple[str, str], Meta]] = {}
        """``{node: {(owner, key): meta}}``: what each node tracks."""
        self._by_key: dict[str, dict[str, Meta]] = {}
        """``{key: {phx_ref: meta}}`` over every part, in arrival order: ``list`` without a merge."""
        self._owned: dict[tuple[str, str], dict[str, None]] = {}
        """``{(node, owner): keys}``: untracking a channel never scans the topic."""
        self._make_ref = make_ref
        self.sessions = 0
        """How many metas (sessions) are present, over every key."""

    def __len__(self) -> int:
        """How many distinct keys (users) are present."""
        return len(self._by_key)

    def get(self, node: str, owner: str, key: str) -> Meta | None:
        part = self.parts.get(node)
        return None if part is None else part.get((owner, key))

    # -- the local node's own operations (Phoenix.Presence.track/update/untrack) -----------------

    def track(self, node: str, owner: str, key: str, meta: Meta) -> tuple[Meta, Diff]:
        """Add ``owner``'s presence under ``key``; returns the stored meta and the diff.

        Raises:
            PresenceError: ``already_tracked`` when ``owner`` already tracks ``key`` here.
        """
        if self.get(node, owner, key) is not None:
            raise PresenceError("already_tracked", key)
        stored = _stamp(meta, self._make_ref())
        self._add(node, owner, key, stored)
        diff = Diff()
        diff.join(key, stored)
        return stored, diff

    def update(self, node: str, owner: str, key: str, meta: Meta | Callable[[Meta], Meta]) -> tuple[Meta, Diff]:
        """Replace ``owner``'s meta under ``key`` (or apply ``meta`` to it when it is a function).

        The new meta gets a new ``phx_ref`` and ``phx_ref_prev`` = the old one; the diff leaves the
        old meta and joins the new one, as Phoenix does.

        Raises:
            PresenceError: ``nopresence`` when ``owner`` does not track ``key`` here.
        """
        old = self.get(node, owner, key)
        if old is None:
            raise PresenceError("nopresence", key)
        fields = {k: v for k, v in old.items() if k not in _RESERVED}
        stored = _stamp(meta(fields) if callable(meta) else meta, self._make_ref())
        stored["phx_ref_prev"] = old["phx_ref"]
        self._remove(node, owner, key)
        self._add(node, owner, key, stored)
        diff = Diff()
        diff.join(key, stored)
        diff.leave(key, old)
        return stored, diff

    def untrack(self, node: str, owner: str, key: str | None = None) -> Diff:
        """Remove ``owner``'s presence under ``key``, or all of its presences; a no-op if none."""
        diff = Diff()
        keys = list(self._owned.get((node, owner), ())) if key is None else [key]
        for k in keys:
            if self.get(node, owner, k) is not None:
                diff.leave(k, self._remove(node, owner, k))
        return diff

    def keys_of(self, node: str, owner: str) -> list[str]:
        """The keys ``owner`` tracks on ``node``."""
        return list(self._owned.get((node, owner), ()))

    # -- other nodes' parts (for replication) ----------------------------------------------------

    def part(self, node: str) -> dict[tuple[str, str], Meta]:
        """A copy of what ``node`` tracks, to ship to peers."""
        return dict(self.parts.get(node, {}))

    def replace_part(self, node: str, entries: dict[tuple[str, str], Meta]) -> Diff:
        """Install ``node``'s part as received from it; the diff is what changed here."""
        diff = Diff()
        for (owner, key), meta in list(self.parts.get(node, {}).items()):
            if entries.get((owner, key), {}).get("phx_ref") != meta["phx_ref"]:
                diff.leave(key, self._remove(node, owner, key))
        for (owner, key), meta in entries.items():
            if self.get(node, owner, key) is None:
                self._add(node, owner, key, meta)
                diff.join(key, meta)
        return diff

    def drop_node(self, node: str) -> Diff:
        """Forget everything ``node`` tracked (it is down); the diff is its presences as leaves."""
        return self.replace_part(node, {})

    # -- reading ---------------------------------------------------------------------------------

    def list(self) -> dict[str, dict[str, list[Meta]]]:
        """The ``presence_state`` payload: ``{key: {"metas": [...]}}`` over every node."""
        return {key: {"metas": list(metas.values())} for key, metas in self._by_key.items()}

    def _add(self, node: str, owner: str, key: str, meta: Meta) -> None:
        self.parts.setdefault(node, {})[(owner, key)] = meta
        self._owned.setdefault((node, owner), {})[key] = None
        self._by_key.setdefault(key, {})[meta["phx_ref"]] = meta
        self.sessions += 1

    def _remove(self, node: str, owner: str, key: str) -> Meta:
        part = self.parts[node]
        meta = part.pop((owner, key))
        if not part:
            del self.parts[node]
        owned = self._owned[(node, owner)]
        del owned[key]
        if not owned:
            del self._owned[(node, owner)]
        metas = self._by_key[key]
        del metas[meta["phx_ref"]]
        if not metas:
            del self._by_key[key]
        self.sessions -= 1
        return meta


def _stamp(fields: Meta, ref: str) -> Meta:
    """A stored meta: the user fields (never a client's own phx_ref) plus a fresh ``phx_ref``."""
    meta = {k: v for k, v in fields.items() if k not in _RESERVED}
    meta["phx_ref"] = ref
    return meta
