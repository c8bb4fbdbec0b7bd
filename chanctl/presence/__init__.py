"""Presence: who is on a topic, in the format phoenix.js ``Presence`` consumes.

``state`` is pure (no I/O, no clock, importable without asyncio): the node-tagged state of one
topic, its diffs and lists. ``tracker`` is the asyncio side that tracks channels on a server.
"""
