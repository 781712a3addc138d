"""What the console shows while work runs: progress bars for long work (rich; ``quiet`` turns them
into no-ops), log lines (never wrapped when the output is not a terminal), the library's warnings
(logger ``kdbench``, e.g. a corrupt cached file discarded) and an OS error as one line naming the path."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class LogConsole(Console):
    """A rich Console that never wraps a printed line when its output is not a terminal: a CI log
    or a pipe gets each line whole (no line break in the middle of a number or a path)."""

    def print(self, *objects, soft_wrap=None, **kwargs) -> None:
        if soft_wrap is None and not self.is_terminal:
            soft_wrap = True
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)


console = LogConsole(stderr=True)


class Reporter:
    """One overall bar (runs done) plus a bar for the job in progress."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._progress: Optional[Progress] = None

    def __enter__(self) -> "Reporter":
        if not self.quiet:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def log(self, message: str) -> None:
        if not self.quiet:
            (self._progress.console if self._progress else console).print(message)

    @contextmanager
    def bar(self, description: str, total: int | None = None) -> Iterator[Callable[[int, int], None]]:
        """A transient bar; yields ``update(done, total)``."""
        if self._progress is None:
            yield lambda done, total: None
            return
        task = self._progress.add_task(description, total=total)
        try:
            yield lambda done, total: self._progress.update(task, completed=done, total=total)
        finally:
            self._progress.remove_task(task)


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
