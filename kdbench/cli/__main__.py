"""``python -m kdbench.cli``: the command line, as the ``kdbench`` script runs it."""

from kdbench.cli.app import main

main()
