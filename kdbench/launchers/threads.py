"""How many torch threads a job gets when the user does not say (``-L threads=T`` does).

More threads help only a step big enough to split between them. On small models one
thread is as fast, and on a machine where other work runs, threads that wait for each
other at every operation spin against that work: the quickstart's 4000-step
progressive run took 4.3 s on an idle machine and 111-152 s at a load of ~5 with two
threads. So before training, the local launcher times a few engine steps of the first
job it will run (the first teacher to train, else the first run) with one thread and
with the cores a job owns, interleaved, and takes more threads only if they make a
step at least ``SPEEDUP_NEEDED`` times faster. The measurement sees the machine as it
is: a busy machine, like a small model, gets one thread.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Optional

import torch

from kdbench.launchers import LaunchContext
from kdbench.launchers.common import teacher_groups
from kdbench.run.engine import TrainJob
from kdbench.run.probe import phase_seconds
from kdbench.run.runner import build_task, prepare
from kdbench.run.store import teacher_dir
from kdbench.run.teachers import ProbeTeacher, teacher_is_ready, teacher_job

SPEEDUP_NEEDED = 1.3  # below this, the extra threads' cost on a shared machine outweighs their gain
ROUNDS, STEPS, WARMUP = 2, 4, 1  # interleaved rounds; timed and untimed steps per round


@dataclass
class ThreadChoice:
    """The threads per job and why, for the log line."""

    threads: int
    reason: str


def probe_job(runs, ctx: LaunchContext) -> tuple[TrainJob, str]:
    """A throwaway engine job like the first one the launch will run, and its name."""
    for tid, group in teacher_groups(runs, ctx.registry, ctx.teacher_checkpoints).items():
        if not teacher_is_ready(teacher_dir(ctx.out, tid), group["checkpoints"]):
            run = group["run"]
            task = build_task(run, ctx.registry, ctx.device, ctx.out)
            return teacher_job(task, run.teacher_seed, run.teacher_recipe, run.eval.points,
                               options=ctx.run_options), f"teacher {tid}"
    run = runs[0]
    task = build_task(run, ctx.registry, ctx.device, ctx.out)
    prepared = prepare(run, ctx.registry, task, ProbeTeacher(task, run.teacher_seed, run.checkpoints),
                       replace(ctx.run_options, compile=False))
    return prepared.job, f"{run.task_label} {run.method_label}"


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run the block with ``threads`` torch threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def step_seconds(job: TrainJob, threads: int) -> float:
    """Seconds of one step of ``job`` (summed over its distinct phases) with ``threads`` threads."""
    with torch_threads(threads):
        return sum(phase_seconds(job, STEPS, WARMUP).values())


def choose_threads(runs, ctx: LaunchContext, most: int) -> ThreadChoice:
    """1 or ``most`` threads per job for ``runs``, by timing (see the module docstring)."""
    if most <= 1:
        return ThreadChoice(1, "one core per job")
    if ctx.device is not None and ctx.device.type != "cpu":
        return ThreadChoice(most, f"the models run on {ctx.device}")
    try:
        job, what = probe_job(runs, ctx)
        times: dict[int, Optional[float]] = {1: None, most: None}
        for _ in range(ROUNDS):  # interleaved: a burst of other work hits both settings alike
            for threads in times:
                seconds = step_seconds(job, threads)
                times[threads] = seconds if times[threads] is None else min(times[threads], seconds)
    except Exception as exc:  # the runs themselves will report a real problem; keep the old default
        return ThreadChoice(most, f"the timing probe failed ({type(exc).__name__}: {exc})")
    one, many = times[1], times[most]
    timing = f"a step of {what}: {one * 1e3:.3g} ms with 1 thread, {many * 1e3:.3g} ms with {most}"
    if one >= SPEEDUP_NEEDED * many:
        return ThreadChoice(most, timing)
    return ThreadChoice(1, timing + f" (less than {SPEEDUP_NEEDED}x faster)")
