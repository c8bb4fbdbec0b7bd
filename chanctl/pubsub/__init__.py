"""Topic fan-out. Local delivery always happens in process; an adapter carries it between nodes.

The interface the server uses, which an adapter (e.g. a Redis one) keeps by extending
:class:`LocalPubSub` and forwarding to peers:

- ``subscribe(topic, subscriber, tag=None, intercept=frozenset())`` / ``unsubscribe(topic, subscriber, tag=None)``:
  one subscription per (topic, subscriber); ``tag`` is the channel's, so a stale leave cannot remove a
  rejoined channel's subscription.
- ``broadcast(topic, event, payload, exclude=None, *, skip=()) -> int``: deliver to this node's
  subscribers (one encode per :class:`Encoder`); an adapter also publishes to its peers and, for what
  peers send, calls the local delivery without publishing again.
- ``broadcast_local(...)``: the same delivery, to this node's subscribers only, whatever
  ``broadcast`` does in an adapter (presence diffs: every node computes its own).
- ``await ready(topic)`` before a join's handler runs and ``release(topic)`` after it subscribed
  (or was refused): an adapter makes sure the node already receives the topic's broadcasts from
  its peers (the Redis one waits for its SUBSCRIBE), so a client told it joined misses nothing.
- ``subscriptions(topic)``, ``subscriber_count(topic)``, ``topics()``; ``tap`` (the admin plane's
  :class:`Tap`, None while nobody watches) and the ``broadcasts`` counter.

The Redis adapter is :class:`chanctl.pubsub.redis.RedisPubSub` (imports ``redis`` only when built).

A :class:`Subscriber` (a connection, the test harness's subscription) has an ``encoder``, a
non-blocking ``deliver(bytes)``, and ``handle_out(tag, message)`` for the events it intercepts.
"""

from chanctl.pubsub.local import Encoder, LocalPubSub, Subscriber, Tap

__all__ = ["Encoder", "LocalPubSub", "Subscriber", "Tap"]
