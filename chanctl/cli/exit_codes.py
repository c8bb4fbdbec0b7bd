"""Exit codes, documented and stable (README "Exit codes"); scripts may rely on them."""

import enum

__all__ = ["ExitCode"]


class ExitCode(enum.IntEnum):
    OK = 0
    """Success."""
    ERROR = 1
    """An error reply, an invalid or expired token, a config with problems."""
    USAGE = 2
    """Bad arguments, or no config/secret where one is needed."""
    REFUSED = 3
    """The server refused the connection or the join."""
    UNREACHABLE = 4
    """Timeout, or the server could not be reached."""
    INTERRUPTED = 130
    """Ctrl+C (128 + SIGINT, as shells report it); ``serve`` instead stops cleanly and exits 0."""
