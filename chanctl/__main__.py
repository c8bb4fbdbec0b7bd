"""``python -m chanctl``: the same as the ``chanctl`` command."""

from chanctl.cli.main import main

main()
