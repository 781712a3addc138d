"""Time estimates for ``kdbench plan``: a few real engine steps of each phase, on this device.

Each distinct phase of a run (and each teacher) is trained for ``warmup + steps``
steps by the engine itself, with the run's batch size, precision and compile
setting; the median of the last ``steps`` step times, times the allotted steps,
plus one timed evaluation per curve point, is the estimate. It ignores what
changes over a run (nothing for these models) and everything outside the loop
(process start, FLOP measurement, data on disk).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch

from .api import TaskInstance
from .engine import TrainJob, train


def phase_seconds(job: TrainJob, steps: int = 10, warmup: int = 2) -> dict[str, float]:
    """Seconds per step of each distinct phase (by ``cost_key``) that has steps allotted:
    the median of ``steps`` timed engine steps after ``warmup`` untimed ones."""
    seconds: dict[str, float] = {}
    cuda = next(job.model.parameters()).device.type == "cuda"

    def stamp(_clock) -> None:
        if cuda:
            torch.cuda.synchronize()  # kernels run asynchronously: time them, not their launch
        stamps.append(time.perf_counter())

    for planned in job.plan:
        if planned.steps == 0 or planned.phase.cost_key in seconds:
            continue
        stamps = []
        probe = replace(job, plan=[replace(planned, steps=warmup + steps)], eval_at=[], state_path=None,
                        on_step=stamp)
        start = time.perf_counter()
        train(probe)
        times = [b - a for a, b in zip([start] + stamps, stamps)][warmup:]
        seconds[planned.phase.cost_key] = statistics.median(times)  # robust to a stall of a shared machine
    return seconds


def eval_seconds(task: TaskInstance, model) -> float:
    """Seconds of one evaluation of ``model`` on the task's evaluation set."""
    model.eval()
    start = time.perf_counter()
    task.evaluate(model)
    model.train()
    return time.perf_counter() - start


def estimate_job(job: TrainJob, steps: int = 10, warmup: int = 2) -> float:
    """Estimated seconds for ``job``: probed step times x allotted steps + its evaluations."""
    per_step = phase_seconds(job, steps, warmup)
    total = sum(per_step[p.phase.cost_key] * p.steps for p in job.plan if p.steps)
    return total + eval_seconds(job.task, job.model) * len(set(job.eval_at))


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``, ``3.2 d``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
