"""Time estimates for ``kdbench plan``: a few real engine steps of each phase, on this device.

Each distinct phase of a run (and each teacher) is trained for ``warmup + steps``
steps by the engine itself, with the run's batch size, precision and compile
setting; the median of the last ``steps`` step times, times the allotted steps,
plus one timed evaluation per curve point, is the estimate; the quartiles of the
step times give its spread. It ignores what changes over a run (nothing for these
models) and everything outside the loop (process start, FLOP measurement, data on
disk). ``kdbench plan`` measures with the threads ``kdbench run`` would choose
(:mod:`kdbench.launchers.threads`) and says when the machine looked busy.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

import torch

from kdbench.api import TaskInstance
from kdbench.run.engine import TrainJob, train


@dataclass(frozen=True)
class Estimate:
    """Estimated seconds from the first quartile, the median and the third quartile of the
    timed step times: the spread says how steady the machine was while it was measured."""

    low: float
    mid: float
    high: float


def phase_step_times(job: TrainJob, steps: int = 10, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of each of ``steps`` timed engine steps (after ``warmup`` untimed ones) of each
    distinct phase (by ``cost_key``) that has steps allotted."""
    times_by_phase: dict[str, list[float]] = {}
    cuda = next(job.model.parameters()).device.type == "cuda"

    def stamp(_clock) -> None:
        if cuda:
            torch.cuda.synchronize()  # kernels run asynchronously: time them, not their launch
        stamps.append(time.perf_counter())

    for planned in job.plan:
        if planned.steps == 0 or planned.phase.cost_key in times_by_phase:
            continue
        stamps = []
        probe = replace(job, plan=[replace(planned, steps=warmup + steps)], eval_at=[], state_path=None,
                        on_step=stamp)
        start = time.perf_counter()
        train(probe)
        times_by_phase[planned.phase.cost_key] = [b - a for a, b in zip([start] + stamps, stamps)][warmup:]
    return times_by_phase


def phase_seconds(job: TrainJob, steps: int = 10, warmup: int = 2) -> dict[str, float]:
    """Seconds per step of each distinct phase: the median of its timed steps (robust to a stall
    of a shared machine)."""
    return {key: statistics.median(times) for key, times in phase_step_times(job, steps, warmup).items()}


def eval_seconds(task: TaskInstance, model) -> float:
    """Seconds of one evaluation of ``model`` on the task's evaluation set."""
    model.eval()
    start = time.perf_counter()
    task.evaluate(model)
    model.train()
    return time.perf_counter() - start


def estimate_job(job: TrainJob, steps: int = 10, warmup: int = 2) -> Estimate:
    """Estimated seconds for ``job``: probed step times x allotted steps + its evaluations, with
    the step times' median and, for the spread, their quartiles."""
    times = phase_step_times(job, steps, warmup)
    evals = eval_seconds(job.task, job.model) * len(set(job.eval_at))

    def total(pick) -> float:
        return sum(pick(times[p.phase.cost_key]) * p.steps for p in job.plan if p.steps) + evals

    def quartile(i: int):
        return lambda t: statistics.quantiles(t, n=4)[i] if len(t) > 1 else t[0]

    return Estimate(total(quartile(0)), total(statistics.median), total(quartile(2)))


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``, ``3.2 d``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
