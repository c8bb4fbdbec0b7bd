"""The asyncio runtime: handshake, connections, fan-out, shutdown."""

from chanctl.server.runtime import ChannelServer, build_server

__all__ = ["ChannelServer", "build_server"]
