"""The ``tsmeter`` command line: thin click commands over :class:`tsmeter.Meter`.

Run ``tsmeter --help`` for the command tree; every command's help ends with an
example. The entry point is :func:`tsmeter.cli.main.main`.
"""

from tsmeter.cli.main import cli, main

__all__ = ["cli", "main"]
