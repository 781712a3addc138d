"""Loggers for the tests: ``recorder`` appends every call it gets to a JSON-lines file in the
results folder; ``flaky`` records too, and raises at its ``fail_at``-th curve point."""

import json
import os
from typing import Optional

from kdbench import Params, hookimpl
from kdbench.loggers import Logger


class RecorderParams(Params):
    file: str = "calls.jsonl"  # inside the results folder
    fail_at: int = 2  # flaky: the curve point (1-based) at which it raises
    interrupt_at: Optional[int] = None  # the curve point at which it raises KeyboardInterrupt, once per folder


class Recorder(Logger):
    """Writes one JSON line per call: which call, the run, the process, and what it got."""

    name, version, Params = "recorder", "1", RecorderParams

    def start(self, run):
        self.path, self.run_id, self.points = run.out / self.params.file, run.run_id, 0
        self.write("start", name=run.name, suite=run.suite, config=run.config)

    def log_point(self, point):
        self.points += 1
        self.write("point", step=point.step, flops=point.flops, phase=point.phase, metrics=point.metrics)
        marker = self.path.with_suffix(".interrupted")
        if self.points == self.params.interrupt_at and not marker.exists():
            marker.touch()
            raise KeyboardInterrupt

    def finish(self, summary):
        self.write("finish", summary=summary)

    def write(self, call, **data):
        with open(self.path, "a") as f:
            f.write(json.dumps({"logger": self.name, "call": call, "run_id": self.run_id, "pid": os.getpid(),
                                **data}) + "\n")


class Flaky(Recorder):
    """A tracker that goes away: raises at its ``fail_at``-th curve point."""

    name = "flaky"

    def log_point(self, point):
        super().log_point(point)
        if self.points == self.params.fail_at:
            raise RuntimeError("tracker unreachable")


@hookimpl
def kdbench_register_loggers():
    return [Recorder, Flaky]
