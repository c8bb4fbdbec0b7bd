"""chanctl: run, inspect and talk to Phoenix Channels servers."""

__version__ = "0.1.0"

from chanctl.channel import Channel, ChannelSocket, Outcome, error, ok  # noqa: E402
from chanctl.errors import ChanctlError, ConfigError, PresenceError, TokenError  # noqa: E402

__all__ = ["Channel", "ChannelSocket", "ChanctlError", "ConfigError", "Outcome", "PresenceError", "TokenError", "__version__", "error", "ok"]
