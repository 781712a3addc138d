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
import torch.nn.functional as F

from .api import Phase, Recipe, TaskInstance, logits
from .budget import eval_steps
from .engine import TrainJob, train
from .teachers import new_teacher


def phase_seconds(job: TrainJob, steps: int = 10, warmup: int = 2) -> dict[str, float]:
    """Seconds per step of each distinct phase (by ``cost_key``) that has steps allotted:
    the median of ``steps`` timed engine steps after ``warmup`` untimed ones."""
    seconds: dict[str, float] = {}
    cuda = next(job.model.parameters()).device.type == "cuda"

    def stamp(_step: int) -> None:
        if cuda:
            torch.cuda.synchronize()  # kernels run asynchronously: time them, not their launch
        stamps.append(time.perf_counter())

    for i, (phase, allotted, cost) in enumerate(zip(job.phases, job.steps, job.step_flops)):
        if allotted == 0 or phase.cost_key in seconds:
            continue
        stamps = []
        per_phase = {"cotrain_flops": [job.cotrain_flops[i]]} if getattr(job, "cotrain_flops", None) else {}
        probe = replace(job, phases=[phase], steps=[warmup + steps], step_flops=[cost], eval_at=[],
                        state_path=None, progress=None, after_step=stamp,
                        **per_phase)
        start = time.perf_counter()
        train(probe)
        times = [b - a for a, b in zip([start] + stamps, stamps)][warmup:]
        seconds[phase.cost_key] = statistics.median(times)  # robust to a stall of a shared machine
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
    total = sum(per_step[ph.cost_key] * n for ph, n in zip(job.phases, job.steps) if n)
    return total + eval_seconds(job.task, job.model) * len(set(job.eval_at))


def teacher_job(task: TaskInstance, seed: int, recipe: Recipe, eval_points: int, precision: str = "fp32",
                compile: bool = False) -> TrainJob:
    """The engine job that trains this teacher (as the teacher cache does), for probing only."""
    model = new_teacher(task, seed)
    phase = Phase("teacher", loss=lambda b: F.cross_entropy(logits(model, b), b.labels), steps=recipe.steps)
    return TrainJob(model=model, phases=[phase], steps=[recipe.steps], step_flops=[1], recipe=recipe, task=task,
                    stream_seed=0, eval_at=eval_steps([1], [recipe.steps], eval_points), precision=precision,
                    compile=compile)


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``, ``3.2 d``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
