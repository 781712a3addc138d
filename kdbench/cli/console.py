"""What the command line prints besides its tables: an OS error as one line naming the path,
and the library's warnings (logger ``kdbench``, e.g. a corrupt cached file discarded)."""

from __future__ import annotations

import logging

from rich.console import Console


def os_error(exc: OSError) -> str:
    """An OSError as "path: what went wrong"."""
    return f"{exc.filename}: {exc.strerror or exc}" if exc.filename else str(exc)


class ConsoleWarnings(logging.Handler):
    """Prints each warning of the ``kdbench`` logger as one yellow line on a rich console."""

    def __init__(self, console: Console):
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {record.getMessage()}", highlight=False, soft_wrap=True)


def show_warnings(console: Console) -> None:
    """Send the ``kdbench`` logger's warnings to ``console`` (once, however often it is called)."""
    logger = logging.getLogger("kdbench")
    if not any(isinstance(h, ConsoleWarnings) for h in logger.handlers):
        logger.addHandler(ConsoleWarnings(console))
