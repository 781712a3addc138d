"""Loggers follow kdbench runs in an experiment tracker. Built-ins: ``tensorboard``, ``mlflow``, ``wandb``.

A logger is chosen by ``kdbench run --log NAME[:KEY=VALUE,...]`` or a suite's
``loggers: [{name: ..., options: {...}}]``; its options are validated by its
``Params`` model. kdbench makes one instance per run, in the process that
trains it (this one, a ``--jobs`` worker, a Slurm job), and calls it at the
start of the run, at every curve point and at the end
(:class:`kdbench.loggers.runlog.RunLog`). A logger that raises is never the
run's failure: kdbench warns once and stops calling it for that run; the run's
own files are the record.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from kdbench.api import Params

# what a curve point holds besides its metrics
POINT_FIELDS = ("step", "samples", "flops", "teacher_flops", "phase", "time")


@dataclass(frozen=True)
class LoggedRun:
    """What a logger learns at the start of a run.

    ``config`` is the run's ``config.json``: suite, task and method (names,
    labels, versions, resolved params), seed and teacher seed, teacher and
    student recipes, budget, evaluation settings, run and teacher ids.
    ``name`` is readable (``TASK/METHOD/seedS``); ``out`` the results folder.
    """

    run_id: str
    suite: str
    name: str
    config: dict
    out: Path

    @property
    def folder(self) -> Path:
        """The run's folder in the results folder (``OUT/runs/<run_id>``)."""
        return self.out / "runs" / self.run_id

    def flat_params(self) -> dict[str, Any]:
        """``config`` flattened for trackers whose params are flat: ``task_params.n``; lists and
        other values that are not a number, a string or a bool as JSON text."""
        flat: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for key, item in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), item)
            elif isinstance(value, (bool, int, float, str)):
                flat[prefix] = value
            else:
                flat[prefix] = json.dumps(value, default=str)

        walk("", self.config)
        return flat


@dataclass(frozen=True)
class LogPoint:
    """One curve point: after ``step`` student steps and ``flops`` student FLOPs, in ``phase``.

    ``metrics`` holds the task's metrics and ``train_loss`` (the mean loss since the
    previous point; absent at step 0). ``teacher_flops`` counts a co-trained teacher
    (0 otherwise); ``time`` is the run's training seconds so far."""

    step: int
    flops: int
    samples: int
    phase: str
    time: float
    metrics: dict[str, float] = field(default_factory=dict)
    teacher_flops: int = 0

    @classmethod
    def from_curve(cls, point: dict) -> "LogPoint":
        """The view of a ``curve.json`` entry."""
        metrics = {k: float(v) for k, v in point.items()
                   if k not in POINT_FIELDS and isinstance(v, (int, float)) and not isinstance(v, bool)}
        return cls(step=int(point["step"]), flops=int(point["flops"]), samples=int(point.get("samples", 0)),
                   phase=str(point.get("phase", "")), time=float(point.get("time", 0.0)), metrics=metrics,
                   teacher_flops=int(point.get("teacher_flops", 0)))


class Logger:
    """A logger plugin: ``start(run)``, ``log_point(point)`` at every curve point, ``finish(summary)``.

    ``requires`` names the modules it imports (checked when a suite is validated:
    a missing one is an error that prints ``install``). The instance is made with
    the validated ``Params`` (``self.params``) in the process that trains the run.
    ``finish`` gets the run's ``summary.json`` (``status``: finished, diverged or
    failed; ``metrics``, ``flops``, ``steps``, ``wall_time``...), or
    ``{"run_id", "status": "interrupted"}`` when the run stopped to be resumed
    later (Ctrl-C, preemption): a resumed run starts its loggers again and logs
    the points after the one it resumed from.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[Params]] = Params
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""

    def __init__(self, params: Optional[Params] = None):
        self.params = params if params is not None else self.Params()

    def start(self, run: LoggedRun) -> None:
        """Open the tracker's run for ``run``."""

    def log_point(self, point: LogPoint) -> None:
        """Record one curve point."""

    def finish(self, summary: dict) -> None:
        """Record the run's summary and close the tracker's run."""


def missing_modules(cls: type[Logger]) -> list[str]:
    """The modules of ``cls.requires`` that cannot be imported here (found without importing them)."""
    missing = []
    for module in cls.requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def resolve_in(out: Path, path: Optional[str], default: str) -> Path:
    """A folder a logger writes to: ``path`` (relative ones inside the results folder ``out``), else ``out/default``."""
    folder = Path(path).expanduser() if path else Path(default)
    return folder if folder.is_absolute() else Path(out) / folder


def final_metrics(summary: dict) -> dict[str, float]:
    """The numbers of a summary a tracker shows at the end: the final metrics, steps, FLOPs, wall time."""
    numbers = {f"final/{k}": v for k, v in (summary.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for key in ("steps", "flops", "total_flops", "wall_time"):
        if isinstance(summary.get(key), (int, float)):
            numbers[f"summary/{key}"] = summary[key]
    return numbers
