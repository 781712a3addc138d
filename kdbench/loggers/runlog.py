"""The loggers of one run: started at the run's first curve point (a finished run that is
skipped starts none), fed every curve point the engine records, finished with the summary.

A logger that raises is never the run's failure: the first exception of a logger
in a run is reported on one line (the logger, the run, what it was doing, the
error) and that logger is not called again for the run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from kdbench.errors import FAILURES
from kdbench.loggers import LoggedRun, Logger, LogPoint
from kdbench.loggers.selection import LoggerSpec
from kdbench.plugins import Registry


def warn_on_stderr(message: str) -> None:
    """Print a warning line on stderr (above the progress bars, in a worker, in a Slurm job's log)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def logged_run(run, out: Path) -> LoggedRun:
    """What the loggers learn about ``run`` (a :class:`kdbench.suite.Run`) at its start."""
    return LoggedRun(run_id=run.run_id, suite=run.suite, name=f"{run.task_label}/{run.method_label}/seed{run.seed}",
                     config=run.config(), out=Path(out))


class RunLog:
    """Calls the loggers of one run and keeps a failing one from failing the run."""

    def __init__(self, run, registry: Registry, out: Path, specs: Sequence[LoggerSpec] = (),
                 warn: Callable[[str], None] = warn_on_stderr):
        self.run, self.registry, self.out, self.specs, self.warn = run, registry, Path(out), tuple(specs), warn
        self.loggers: Optional[dict[str, Logger]] = None  # None until started

    def _call(self, name: str, what: str, call: Callable[[], None]) -> None:
        try:
            call()
        except FAILURES as exc:  # a tracker's problem (even a sys.exit) must not stop the training
            self.loggers.pop(name, None)
            self.warn(f"logger {name} failed {what} of run {self.run.run_id} ({type(exc).__name__}: {exc}); "
                      f"it is not called again for this run, whose own files are the record")

    def _start(self) -> None:
        if self.loggers is not None:
            return
        self.loggers, info = {}, logged_run(self.run, self.out)
        for spec in self.specs:
            def start(spec=spec):
                self.loggers[spec.name] = spec.build(self.registry)
                self.loggers[spec.name].start(info)
            self._call(spec.name, "at the start", start)

    def point(self, curve_point: dict) -> None:
        """An engine ``on_record``: log one curve point with every logger still working."""
        if not self.specs:
            return
        self._start()
        point = LogPoint.from_curve(curve_point)
        for name, logger in list(self.loggers.items()):
            self._call(name, f"at step {point.step}", lambda logger=logger: logger.log_point(point))

    def finish(self, summary: dict) -> None:
        """Log the run's summary and close every logger (nothing for a run that was skipped)."""
        if not self.specs or (self.loggers is None and summary.get("status") == "skipped"):
            return
        self._start()
        for name, logger in list(self.loggers.items()):
            self._call(name, "at the end", lambda logger=logger: logger.finish(summary))
        self.loggers = {}

    def abort(self) -> None:
        """The run stopped before its end (Ctrl-C, preemption, a user error): close the loggers it started."""
        if self.loggers:
            self.finish({"run_id": self.run.run_id, "status": "interrupted"})
