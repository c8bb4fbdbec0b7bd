"""Broadcast history in Redis, shared by the nodes of a cluster (Centrifugo's offsets in a stream).

On one node, :class:`~chanctl.pubsub.history.History` numbers broadcasts as it delivers them. A
node of a cluster cannot: it hears a topic only while it has subscribers there. So with
``cluster:`` the numbering and the kept broadcasts live in Redis, and one Lua script assigns a
broadcast's offset, keeps it and publishes it, atomically: every node delivers the same offset
for the same broadcast, and any node can replay what a client missed on another.

Keys, per topic with ``history:`` (``<prefix>`` is ``cluster.prefix``):

- ``<prefix>:h:<topic>``, a hash ``{epoch, offset}``: the topic's numbering. It expires
  :data:`~chanctl.pubsub.history.META_TTL` (24 h) after the topic's last broadcast or join with
  history, as the in-memory one is dropped.
- ``<prefix>:s:<topic>``, a stream of the kept broadcasts, one entry ``{o: offset, d: [event,
  payload] as JSON}`` each, ids from Redis's clock. Each publish trims it to about ``size``
  entries (``MAXLEN ~``) and drops those older than ``ttl`` (``MINID ~ now - ttl``); the key
  expires ``ttl`` after the last broadcast. Trimming with ``~`` may keep a few more: a recovery
  is refused when more than ``size`` broadcasts or one older than ``ttl`` would be replayed, so
  the promise is exactly the in-memory one.

The epoch is made (random, by whichever node first needs it) when the hash does not exist, and the
stream is dropped with it: history lost (the keys expired, Redis restarted without persistence,
a flush) means a new epoch, and a client holding the old one is answered ``recovered: false``.

A broadcast on such a topic travels as ``H<seq> <node>\\n<offset> <epoch>\\n[event, payload]``
(:mod:`chanctl.pubsub.redis`); each node adds ``offset`` and ``epoch`` to the payload before it
fans out. While Redis is unreachable a node delivers its own broadcasts locally, unnumbered and not
kept (they never reach the other nodes either; the topics are told on reconnection).

A join reads the topic's position, and for ``since`` the missed broadcasts, with a second script
(atomic: the position and the entries agree). The node is already subscribed to the topic's
channel (``RedisPubSub.ready``) and records what it hears for the topic during the read
(``RedisPubSub.heard``): those with an offset the read already covered are dropped, the others
follow the replay, so the joiner gets no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from chanctl.pubsub.history import META_TTL, NOT_HISTORY, HistorySpec, HistorySpecs, HistoryStats, Recovery, read_since

from chanctl.pubsub.redis import describe

if TYPE_CHECKING:
    from chanctl.pubsub.redis import RedisPubSub

__all__ = ["PUBLISH_SCRIPT", "READ_SCRIPT", "StreamHistory"]

log = logging.getLogger("chanctl.cluster")

READ_TIMEOUT = 5.0
"""Longest a join waits for its topic's history; past it the join is answered without a position
(``recovered: false`` for a ``since``)."""
READ_BATCH = 100
"""Most history reads sent in one pipeline. Reads wait for the pipeline in flight and go together
in the next: 1,000 clients rejoining at once cost ten round trips on one connection, not 1,000
connections (redis-py's pool refuses a command past its 100th)."""

_NOW_MS = "local now = redis.call('TIME')\nlocal now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)\n"

_NUMBERING = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
"""

PUBLISH_SCRIPT = _NUMBERING + _NOW_MS + """
-- KEYS: the topic's hash and stream. ARGV: a new epoch, the channel, the message as published
-- without history ("B<seq> <node>\\n<json>"), size, ttl in ms, the hash's ttl in ms.
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local message = ARGV[3]
local nl = string.find(message, '\\n', 1, true)
local body = string.sub(message, nl + 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'o', offset, 'd', body)
redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%d', now_ms - tonumber(ARGV[5])))
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[2], 'H' .. string.sub(message, 2, nl) .. offset .. ' ' .. epoch .. '\\n' .. body)
return offset
"""
"""Numbers, keeps and publishes one broadcast."""

READ_SCRIPT = _NUMBERING + """
-- KEYS: the topic's hash and stream. ARGV: a new epoch, the hash's ttl in ms, since's offset
-- ('' without since), since's epoch ('' for any), size, ttl in ms.
-- Returns {epoch, offset} without since, else {epoch, offset, 1 or 0 (recovered), missed...}.
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset'))
if ARGV[3] == '' then return {epoch, offset} end
local since = tonumber(ARGV[3])
local n = offset - since
if (ARGV[4] ~= '' and ARGV[4] ~= epoch) or since < 0 or n < 0 or n > tonumber(ARGV[5]) then
  return {epoch, offset, 0}
end
if n == 0 then return {epoch, offset, 1} end
local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n)
if #entries < n then return {epoch, offset, 0} end
local oldest = entries[n]
""" + _NOW_MS + """
if tonumber(string.match(oldest[1], '^%d+')) <= now_ms - tonumber(ARGV[6]) or oldest[2][2] ~= tostring(since + 1) then
  return {epoch, offset, 0}
end
local result = {epoch, offset, 1}
for i = n, 1, -1 do result[#result + 1] = entries[i][2][4] end
return result
"""
"""A join's position and, for ``since``, the missed broadcasts (all or nothing)."""



def _ms(seconds: float) -> int:
    """Milliseconds for PEXPIRE and MINID, at least 1 (PEXPIRE 0 would delete the key)."""
    return max(1, round(seconds * 1000))


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


_META_TTL_MS = _ms(META_TTL)


class StreamHistory:
    """The history of a cluster's topics, in Redis; the same interface as ``History`` for a join.

    Args:
        pubsub: the node's Redis adapter (its connection, and what it hears during a read).
        spec_for: the history settings of a topic, or None; asked once per topic.
    """

    publish_sha = _sha(PUBLISH_SCRIPT)
    read_sha = _sha(READ_SCRIPT)

    def __init__(self, pubsub: RedisPubSub, spec_for: Callable[[str], HistorySpec | None]):
        self.pubsub = pubsub
        self.spec = HistorySpecs(spec_for)
        self.stats = HistoryStats()
        prefix = pubsub.prefix
        self._meta_prefix = f"{prefix}:h:"
        self._stream_prefix = f"{prefix}:s:"
        self._waiting: list[tuple[tuple[Any, ...], asyncio.Future[list[Any]]]] = []
        """Reads waiting for the next pipeline: the script's arguments, and who waits."""
        self._reader: asyncio.Task[None] | None = None

    def keys(self, topic: str) -> tuple[str, str]:
        """The topic's hash and stream."""
        return self._meta_prefix + topic, self._stream_prefix + topic

    def numbered(self, topic: str, event: str, payload: Any) -> HistorySpec | None:
        """The topic's settings when this broadcast is numbered and kept (a JSON object that is
        not a presence event, on a topic with history), else None."""
        if event in NOT_HISTORY or not isinstance(payload, dict):
            return None
        return self.spec(topic)

    def publish(self, pipe: Any, topic: str, channel: bytes, message: bytes, spec: HistorySpec) -> None:
        """Queue on ``pipe`` the script that numbers, keeps and publishes ``message``."""
        meta, stream = self.keys(topic)
        pipe.evalsha(self.publish_sha, 2, meta, stream, os.urandom(4).hex(), channel, message,
                     spec.size, _ms(spec.ttl), _META_TTL_MS)

    async def load(self, client: Any) -> None:
        """Load both scripts (a restarted Redis has none); called on every (re)connection."""
        await client.script_load(PUBLISH_SCRIPT)
        await client.script_load(READ_SCRIPT)

    async def recover(self, topic: str, params: Any) -> Recovery | None:
        """The position of a join, and for ``since`` the broadcasts it missed followed by those this
        node heard during the read that the read did not cover; None without history.

        The caller must subscribe right after (no await in between), after ``pubsub.ready``."""
        spec = self.spec(topic)
        if spec is None:
            return None
        since = read_since(params)
        problem = since if isinstance(since, str) else None
        asked = since is not None
        if self.pubsub.redis is None or not self.pubsub.connected:
            return self._unread(asked, problem)
        meta, stream = self.keys(topic)
        offset_arg, epoch_arg = ("", "") if since is None or problem else (str(since[0]), since[1] or "")
        args = (meta, stream, os.urandom(4).hex(), _META_TTL_MS, offset_arg, epoch_arg, spec.size, _ms(spec.ttl))
        with self.pubsub.heard(topic) as heard:
            try:
                result = await asyncio.wait_for(self._read(args), READ_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - Redis trouble: answered without a position
                log.warning("history of %r could not be read from Redis: %s", topic, describe(exc))
                return self._unread(asked, problem)
        epoch, offset = result[0].decode(), int(result[1])
        if problem is not None:
            self.stats.failed += 1
            return Recovery(epoch, offset, False, [], problem)
        later = [(event, payload) for number, event, payload in heard if number is None or number > offset]
        if since is None:
            return Recovery(epoch, offset, None, later)
        if not result[2]:
            self.stats.failed += 1
            return Recovery(epoch, offset, False, later)
        missed = []
        for number, body in enumerate(result[3:], since[0] + 1):
            event, payload = orjson.loads(body)
            missed.append((event, {**payload, "offset": number, "epoch": epoch}))
        self.stats.recovered += 1
        self.stats.replayed += len(missed)
        return Recovery(epoch, offset, True, missed + later)

    async def _read(self, args: tuple[Any, ...]) -> list[Any]:
        """The read script's answer for ``args``, sent in the next pipeline of reads."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((args, future))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read_batches())
        return await future

    async def _read_batches(self) -> None:
        """One pipeline of reads at a time, until none waits."""
        while self._waiting:
            batch, self._waiting = self._waiting[:READ_BATCH], self._waiting[READ_BATCH:]
            try:
                results = await self._pipelined([args for args, _ in batch])
            except Exception as exc:  # noqa: BLE001 - Redis went away: each join hears it
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its join stopped waiting (READ_TIMEOUT)
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _pipelined(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        redis = self.pubsub.redis
        if redis is None:
            raise ConnectionError("not connected to Redis")
        pipe = redis.pipeline(transaction=False)
        for args in calls:
            pipe.evalsha(self.read_sha, 2, *args)
        results = await pipe.execute(raise_on_error=False)
        if any(isinstance(result, self.pubsub.no_script) for result in results):
            await self.load(redis)  # Redis lost its scripts (a SCRIPT FLUSH) since this node connected
            for args in calls:
                pipe.evalsha(self.read_sha, 2, *args)
            results = await pipe.execute(raise_on_error=False)
        return results

    def _unread(self, asked: bool, problem: str | None) -> Recovery:
        if asked:
            self.stats.failed += 1
        return Recovery(None, None, False if asked else None, [], problem)

    def topics(self) -> int:
        return self.spec.kept()
