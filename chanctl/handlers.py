"""Import the Python channel classes a config names (``handler: package.module:Class``).

Imports happen in the compile step (:func:`chanctl.server.compile.compile_config`), so
``chanctl check`` reports a missing module or class with its position instead of the first join
failing; loading a config imports nothing. The config's directory goes on ``sys.path`` first, so a config
and its handler module can sit side by side (``sample_configs/counter.yaml`` and
``sample_configs/counter_app/``) and ``chanctl serve`` works from any directory.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from chanctl.channel import Channel
from chanctl.errors import HandlerError

__all__ = ["HandlerError", "import_handler"]


def import_handler(spec: str, base_dir: Path | None) -> type[Channel]:
    """The class ``spec`` names.

    Raises:
        HandlerError: the spec is malformed, the module or class is missing, the module fails to
            import, or the class is not a :class:`~chanctl.channel.Channel`.
    """
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise HandlerError("a handler is written package.module:Class", 1)
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = f" (looked in {base_dir} and sys.path)" if base_dir is not None else ""
        raise HandlerError(f"no module named {exc.name!r}{where}", 1) from None
    except Exception as exc:  # the user's module raised while importing
        raise HandlerError(f"importing {module_name} failed: {type(exc).__name__}: {exc}", 1) from None
    column = len(module_name) + 2
    cls = getattr(module, class_name, None)
    if cls is None:
        raise HandlerError(f"module {module_name} has no {class_name!r}", column)
    if not (isinstance(cls, type) and issubclass(cls, Channel)):
        raise HandlerError(f"{spec} is not a subclass of chanctl.Channel", column)
    return cls
