"""The ``tensorboard`` logger: TensorBoard event files, one folder per run.

``OUT/tensorboard/<task>/<method>/seed<S>-<run id>/`` holds, for every metric
``M`` of the curve (the task's metrics and ``train_loss``): ``M`` against the
student step, ``by_flops/M`` with the student FLOPs as its step, ``cost/flops``
and ``cost/samples`` against the step; the phase as text where it changes; the
run's config as text; at the end the summary as text and, in the HParams
dashboard, the run's params with its final metrics. ``tensorboard --logdir
OUT/tensorboard`` shows every run of the folder.
"""

from __future__ import annotations

import json
from typing import Optional

from pydantic import Field

from kdbench.api import Params
from kdbench.hookspecs import hookimpl
from kdbench.loggers import LoggedRun, Logger, LogPoint, final_metrics, resolve_in

HPARAM_TYPES = (bool, int, float, str)


class TensorBoardParams(Params):
    """Options of the ``tensorboard`` logger."""

    logdir: Optional[str] = Field(None, description="folder of the event files (relative: inside the results "
                                                    "folder); default OUT/tensorboard")


def markdown_json(data) -> str:
    """``data`` as an indented JSON block that TensorBoard's text dashboard shows as code."""
    return "\n".join("    " + line for line in json.dumps(data, indent=1, default=str).splitlines())


class TensorBoardLogger(Logger):
    """Writes each run's curve as TensorBoard scalars against the student step and the FLOPs."""

    name = "tensorboard"
    version = "1"
    Params = TensorBoardParams
    description = "TensorBoard event files in OUT/tensorboard: metrics against steps and FLOPs"
    requires = ("tensorboard",)
    install = 'pip install "kdbench[tensorboard]" (or pip install tensorboard)'

    def start(self, run: LoggedRun) -> None:
        # optional dependency: tensorboard (extra `tensorboard`)
        from torch.utils.tensorboard import SummaryWriter

        c = run.config
        folder = resolve_in(run.out, self.params.logdir, "tensorboard") / c["task_label"] / c["method_label"]
        self.run, self.phase, self.step = run, None, 0
        self.writer = SummaryWriter(str(folder / f"seed{c['seed']}-{run.run_id}"))
        self.writer.add_text("config", markdown_json(c), 0)

    def log_point(self, point: LogPoint) -> None:
        w, self.step = self.writer, point.step
        for metric, value in point.metrics.items():
            w.add_scalar(metric, value, point.step)
            w.add_scalar(f"by_flops/{metric}", value, point.flops)
        w.add_scalar("cost/flops", point.flops, point.step)
        w.add_scalar("cost/samples", point.samples, point.step)
        if point.teacher_flops:
            w.add_scalar("cost/teacher_flops", point.teacher_flops, point.step)
        if point.phase != self.phase:
            w.add_text("phase", point.phase, point.step)
            self.phase = point.phase
        w.flush()

    def finish(self, summary: dict) -> None:
        # optional dependency: tensorboard (extra `tensorboard`)
        from torch.utils.tensorboard.summary import hparams

        if summary.get("status") != "interrupted":  # a resumed run finishes later
            numbers = final_metrics(summary)
            step = summary.get("steps", self.step)
            for tag, value in numbers.items():
                self.writer.add_scalar(tag, value, step)
            self.writer.add_text("summary", markdown_json(summary), step)
            params = {k: v for k, v in self.run.flat_params().items() if isinstance(v, HPARAM_TYPES)}
            for event in hparams({**params, "status": str(summary.get("status"))}, numbers):
                self.writer.file_writer.add_summary(event)
        self.writer.close()


@hookimpl
def kdbench_register_loggers():
    return [TensorBoardLogger]
