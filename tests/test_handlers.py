"""chanctl.handlers: a config's ``handler: package.module:Class``, imported with a located reason."""

from __future__ import annotations

import pytest

from chanctl.handlers import HandlerError, import_handler
from tests.testing.handlers import Ticker


def test_imports_the_class():
    assert import_handler("tests.testing.handlers:Ticker", None) is Ticker


def test_imports_from_the_configs_directory(tmp_path):
    (tmp_path / "beside_config_mod.py").write_text("from chanctl import Channel\nclass Here(Channel):\n    pass\n")
    assert import_handler("beside_config_mod:Here", tmp_path).__name__ == "Here"


@pytest.mark.parametrize("spec, message, column", [
    ("tests.testing.handlers", "a handler is written package.module:Class", 1),
    (":Ticker", "a handler is written package.module:Class", 1),
    ("tests.no_such_module:X", "no module named 'tests.no_such_module'", 1),
    ("tests.testing.handlers:Nope", "module tests.testing.handlers has no 'Nope'", 24),
    ("tests.testing.handlers:Any", "is not a subclass of chanctl.Channel", 24),
])
def test_a_bad_handler_is_a_located_error(spec, message, column):
    with pytest.raises(HandlerError) as info:
        import_handler(spec, None)
    assert message in info.value.message and info.value.column == column


def test_a_module_that_raises_while_importing_is_reported(tmp_path):
    (tmp_path / "exploding_handler_mod.py").write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(HandlerError, match="importing exploding_handler_mod failed: RuntimeError: boom at import"):
        import_handler("exploding_handler_mod:X", tmp_path)
