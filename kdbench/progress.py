"""Progress bars for long work (rich); ``quiet`` turns them into no-ops. Log lines are never wrapped
when the output is not a terminal."""

from __future__ import annotations

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
