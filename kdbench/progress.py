"""What the console shows while work runs: progress bars for long work (rich; ``quiet`` turns them
into no-ops), plain progress lines instead when the output is not a terminal (a pipe, a CI log), a
warning for a job estimated to take over an hour, progress events for a Python callback
(:class:`ProgressEvent`), log lines (never wrapped when the output is not a terminal), the library's
warnings (logger ``kdbench``, e.g. a corrupt cached file discarded) and an OS error as one line naming the path."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterator, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from kdbench.errors import UserError

LINE_EVERY_S = 60.0  # a piped job prints a line at least this often (and at every tenth of its steps)
WARN_SECONDS = 3600.0  # a job estimated to take longer is warned about (KDBENCH_WARN_SECONDS sets it)
# curve point keys that are bookkeeping, not metrics
_NOT_METRICS = ("step", "samples", "flops", "teacher_flops", "phase", "time")


class LogConsole(Console):
    """A rich Console that never wraps a printed line when its output is not a terminal: a CI log
    or a pipe gets each line whole (no line break in the middle of a number or a path)."""

    def print(self, *objects, soft_wrap=None, **kwargs) -> None:
        if soft_wrap is None and not self.is_terminal:
            soft_wrap = True
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)


console = LogConsole(stderr=True)


@dataclass(frozen=True)
class ProgressEvent:
    """What a ``progress`` callback of :func:`kdbench.run_suite` receives while a suite runs.

    ``kind`` is ``run_start``, ``step``, ``eval``, ``run_end`` for a run (a tuning trial too: ``job``
    says which), and ``teacher_start``, ``step``, ``eval``, ``teacher_end`` for a teacher being trained.
    ``run_id`` is the run's id (a teacher's id for a teacher), ``seed`` the student seed (the teacher
    seed for a teacher), ``method`` None for a teacher. ``step`` of ``steps`` are done; ``metrics`` are
    those of the latest evaluation (``train_loss`` and the task's metrics; empty before the first);
    ``eta`` the estimated seconds left (None until two reports have timed a step); ``status`` on
    ``*_end`` events: the run's status (finished, failed, diverged, skipped) or ``interrupted``."""

    kind: str
    job: str  # "run", "trial" or "teacher"
    run_id: str
    task: str
    method: Optional[str]
    seed: int
    step: int = 0
    steps: Optional[int] = None
    metrics: dict = field(default_factory=dict)
    eta: Optional[float] = None
    status: Optional[str] = None


def clock_time(seconds: float) -> str:
    """``h:mm:ss`` (hours past 24 counted on)."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class JobProgress:
    """The progress of one job (a run, a trial, a teacher): ``progress(done, total)`` after steps
    (the engine's progress callback), ``progress.record(point, metric)`` after each evaluation
    (a curve point and the task's ranking metric). It moves the job's bar, or prints a plain line
    when the reporter prints lines, sends events to the reporter's callback and warns once when
    the job's estimated time exceeds the reporter's threshold. ``status`` is set by the launcher
    when the job ends."""

    def __init__(self, reporter: "Reporter", event: ProgressEvent, task_id=None):
        self.reporter, self.event, self.task_id = reporter, event, task_id
        self.metric: Optional[str] = None
        self.status: Optional[str] = None
        self._base: Optional[tuple[float, int]] = None  # (time, steps) of the first report: ETAs time from it
        self._line_at, self._line_tenth, self._warned = reporter.clock(), -1, False

    def _emit(self, kind: str, **changes) -> None:
        self.event = _replace(self.event, kind=kind, **changes)
        self.reporter.emit(self.event)

    def __call__(self, done: int, total: Optional[int]) -> None:
        now = self.reporter.clock()
        if self._base is None or done < self._base[1]:
            self._base = (now, done)
        start, first = self._base
        eta = (total - done) * (now - start) / (done - first) if total and done > first else None
        self._emit("step", step=done, steps=total, eta=eta)
        if self.task_id is not None:
            self.reporter.update_bar(self.task_id, done, total)
        if eta is not None and not self._warned:
            self._warned = True
            self.reporter.warn_if_long(self, (now - start) / (done - first) * total)
        tenth = done * 10 // total if total else -1
        if self.reporter.lines and (tenth > self._line_tenth or now - self._line_at >= LINE_EVERY_S):
            self._line_at, self._line_tenth = now, tenth
            self.reporter.log(self.line())

    def record(self, point: dict, metric: Optional[str] = None) -> None:
        """After an evaluation: ``point`` is the curve point, ``metric`` the task's ranking metric."""
        self.metric = metric or self.metric
        self._emit("eval", step=point.get("step", self.event.step),
                   metrics={k: v for k, v in point.items() if k not in _NOT_METRICS})

    def label(self) -> str:
        """``run <id> <task>/<method> seed S`` (``trial ...``; ``teacher <id> <task> seed T``)."""
        e = self.event
        what = e.task if e.method is None else f"{e.task}/{e.method}"
        return f"{e.job} {e.run_id} {what} seed {e.seed}"

    def line(self) -> str:
        """The job's progress as one plain line: step, share, latest metric, ETA."""
        e = self.event
        parts = [f"step {e.step}/{e.steps}" + (f" ({100 * e.step / e.steps:.0f}%)" if e.steps else "")]
        name = self.metric if self.metric in e.metrics else "train_loss"
        if isinstance(e.metrics.get(name), (int, float)):
            parts.append(f"{name} {e.metrics[name]:.4g}")
        parts.append(f"ETA {clock_time(e.eta) if e.eta is not None else '?'}")
        return f"{self.label()}: {', '.join(parts)}"


def _replace(event: ProgressEvent, **changes) -> ProgressEvent:
    return ProgressEvent(**{**event.__dict__, **changes})


class Reporter:
    """One overall bar (runs done) plus a bar for each job in progress; when the console is not a
    terminal (``lines`` None: decided from the console), plain lines instead of job bars, for each job
    at least every minute or every tenth of its steps. ``progress`` receives every
    :class:`ProgressEvent` (quiet or not); ``warn`` the warning on a job estimated over
    ``warn_seconds`` (default: ``KDBENCH_WARN_SECONDS`` or an hour; printed on the console unless
    given). ``clock`` is injectable for tests. ``device`` and ``suite`` (set by ``run_suite``) name the
    device in the warning and the suite ``kdbench plan`` details; ``trial_ids`` the runs that are
    tuning trials."""

    def __init__(self, quiet: bool = False, progress: Optional[Callable[[ProgressEvent], None]] = None,
                 warn: Optional[Callable[[str], None]] = None, *, lines: Optional[bool] = None,
                 warn_seconds: Optional[float] = None, clock: Callable[[], float] = time.monotonic):
        self.quiet, self.clock, self.listeners = quiet, clock, [progress] if progress else []
        self._lines, self.warn = lines, warn or self._print_warning
        self.warn_seconds = warn_seconds if warn_seconds is not None else _warn_seconds()
        self.device, self.suite, self.trial_ids = "this device", "SUITE", set()
        self._progress: Optional[Progress] = None

    @property
    def lines(self) -> bool:
        """Whether jobs print plain progress lines (not quiet, and the console not a terminal)."""
        return not self.quiet and (self._lines if self._lines is not None else not console.is_terminal)

    def __enter__(self) -> "Reporter":
        if not self.quiet and not self.lines:  # piped, rich would print its bars' last state at the end
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def log(self, message: str) -> None:
        if not self.quiet:
            (self._progress.console if self._progress else console).print(message)

    def emit(self, event: ProgressEvent) -> None:
        """Pass ``event`` to every progress callback."""
        for listener in self.listeners:
            listener(event)

    def _print_warning(self, message: str) -> None:
        (self._progress.console if self._progress else console).print(
            f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)

    def warn_if_long(self, job: JobProgress, seconds: float) -> None:
        """Warn when ``job`` is estimated to take over ``warn_seconds`` in all."""
        if seconds > self.warn_seconds:
            self.warn(f"{job.label()}: estimated {clock_time(seconds)} for {job.event.steps} steps on {self.device} "
                      f"(over {clock_time(self.warn_seconds)}); `kdbench plan {self.suite}` gives the details")

    def update_bar(self, task_id, done: int, total: Optional[int]) -> None:
        if self._progress is not None:
            self._progress.update(task_id, completed=done, total=total)

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

    def run(self, run) -> ContextManager[JobProgress]:
        """The progress of ``run`` (a :class:`kdbench.suite.identity.Run`) while it executes."""
        job = "trial" if run.run_id in self.trial_ids else "run"
        return self.job(ProgressEvent("run_start", job, run.run_id, run.task_label, run.method_label, run.seed),
                         f"{run.task_label} {run.method_label} seed {run.seed}", None)

    def teacher(self, run, total: Optional[int] = None) -> ContextManager[JobProgress]:
        """The progress of the teacher of ``run`` while it is trained (``total``: its steps)."""
        event = ProgressEvent("teacher_start", "teacher", run.teacher_id, run.task_label, None, run.teacher_seed,
                              steps=total)
        return self.job(event, f"teacher {run.teacher_id}", total)

    @contextmanager
    def job(self, event: ProgressEvent, description: str, total: Optional[int]) -> Iterator[JobProgress]:
        """The progress of any job, ``event`` its start (:meth:`run` and :meth:`teacher` make it for
        runs and teachers), ``description`` its bar's text."""
        task_id = self._progress.add_task(description, total=total) if self._progress is not None else None
        job = JobProgress(self, event, task_id)
        self.emit(event)
        end = "teacher_end" if event.job == "teacher" else "run_end"
        try:
            yield job
        except BaseException:
            job._emit(end, status=job.status or "interrupted")
            raise
        else:
            job._emit(end, status=job.status)
        finally:
            if task_id is not None:
                self._progress.remove_task(task_id)


def _warn_seconds() -> float:
    """The threshold of the long-job warning: ``KDBENCH_WARN_SECONDS`` if set, else an hour."""
    value = os.environ.get("KDBENCH_WARN_SECONDS", "")
    try:
        return float(value) if value else WARN_SECONDS
    except ValueError:
        raise UserError(f"KDBENCH_WARN_SECONDS={value!r}: not a number of seconds (e.g. 3600)") from None


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
