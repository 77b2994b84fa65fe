"""``python -m tsmeter``: the ``tsmeter`` command, without relying on the console script."""

from tsmeter.cli.main import main

if __name__ == "__main__":
    main()
