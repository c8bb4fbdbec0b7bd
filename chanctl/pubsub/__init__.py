"""Topic fan-out. Local delivery always happens in process; an adapter carries it between nodes."""

from chanctl.pubsub.local import LocalPubSub, Subscriber

__all__ = ["LocalPubSub", "Subscriber"]
