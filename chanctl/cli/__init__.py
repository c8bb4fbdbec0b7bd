"""The ``chanctl`` command line: one module per command group."""
