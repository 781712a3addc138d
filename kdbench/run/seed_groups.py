"""``--batch-seeds``: execute the runs that differ only in their student seed as one stacked model.

:func:`seed_groups` partitions a suite's runs; :func:`execute_group` trains a group's unfinished
runs together (:mod:`kdbench.run.seed_stack`, :func:`kdbench.run.engine.train_stacked`) and
stores each run's config, curve, summary and student exactly where and as its own run would,
so leaderboards, resume and tuning see no difference. Where a group cannot be stacked
(:func:`kdbench.run.seed_stack.why_not_stackable`, a logit cache, ``--compile``, a run with a
state of its own to resume) its runs execute one by one, and the reason is logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from filelock import FileLock

from kdbench.errors import FAILURES, UserError
from kdbench.loggers.runlog import RunLog
from kdbench.loggers.selection import LoggerSpec
from kdbench.plugins import Registry
from kdbench.run.engine import chain, progress_every, progress_recorder, train_stacked
from kdbench.run.fidelity import fidelity_for
from kdbench.run.options import RunOptions
from kdbench.run.integrity import forget
from kdbench.run.runner import (Prepared, Progress, RunOutcome, budget_flops, build_task, cached_teacher, execute_run,
                                failed_outcome, fidelity_teacher, finished_outcome, prepare, store_result, write_config)
from kdbench.run.seed_stack import SeedStack, why_not_stackable
from kdbench.run.store import discard_unreadable, run_dir
from kdbench.suite.identity import Run

log = logging.getLogger("kdbench")

GROUP_STATE = "group-state.pt"  # in the folder of the group's first run


def group_key(run: Run) -> str:
    """What the runs of one group share: everything in the run's config but the seed and the run id."""
    config = run.config()
    for key in ("seed", "run_id"):
        config.pop(key, None)
    return json.dumps(config, sort_keys=True, default=str)


def seed_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """``runs`` partitioned into groups that differ only in their seed, in the order first met."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    return list(groups.values())


def execute_group(runs: list[Run], registry: Registry, out: Path, options: RunOptions, progress: Progress = None,
                  loggers: Sequence[LoggerSpec] = (), log_line: Callable[[str], None] = log.info) -> list[RunOutcome]:
    """Execute ``runs`` (one :func:`seed_groups` group): the unfinished ones as one stacked model when
    they can be, else one by one (:func:`kdbench.run.runner.execute_run`); one outcome per run, in order.
    ``log_line`` gets the line saying how the group ran."""
    outcomes: dict[str, RunOutcome] = {}
    with contextlib.ExitStack() as locks:
        todo = []
        for run in runs:
            folder = run_dir(out, run.run_id)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                locks.enter_context(FileLock(str(folder / ".lock")))
            except OSError as exc:
                outcomes[run.run_id] = failed_outcome(run, folder, exc, time.time())
                continue
            skipped = finished_outcome(run, folder)
            if skipped is not None:
                outcomes[run.run_id] = skipped
            elif not (folder / "state.pt").exists():  # a separate attempt's saved state resumes alone
                todo.append(run)
        if len(todo) > 1:
            seeds = ", ".join(str(r.seed) for r in todo)
            try:
                stacked = _train_group(todo, registry, out, options, progress, loggers)
            except UserError:
                raise
            except FAILURES as exc:  # the group could not train as one: each run on its own records its failure
                stacked = f"{type(exc).__name__}: {exc}"
            if isinstance(stacked, str):
                log_line(f"seeds {seeds} run one by one: {stacked}")
            else:
                outcomes.update(stacked)
                log_line(f"seeds {seeds} trained as one stacked model")
    for run in runs:  # the locks are released: execute_run takes each run's own
        if outcomes.get(run.run_id) is None:
            outcomes[run.run_id] = execute_run(run, registry, out, options, progress=progress, loggers=loggers)
    return [outcomes[r.run_id] for r in runs]


def static_reason(run: Run, options: RunOptions) -> Optional[str]:
    """Why a group of ``run``'s kind cannot stack whatever its phases (None if nothing stands in the way)."""
    if options.compile:
        return "--compile compiles each run's own model"
    if run.teacher_logits:
        return "a teacher-logit cache is read run by run"
    return None


def plan_group(runs: list[Run], registry: Registry, task, teacher, options: RunOptions,
               budget: Optional[float]) -> tuple[list[Prepared], Optional[str]]:
    """Every run of a group prepared (fresh students, phases, allotted steps) and why they cannot
    train as one stacked model (None: they can)."""
    prepared = [prepare(run, registry, task, teacher, options, budget=budget) for run in runs]
    first = prepared[0]
    if any(p.phase_steps != first.phase_steps or p.phase_flops != first.phase_flops for p in prepared):
        return prepared, "the seeds' plans differ (steps or FLOPs per phase)"
    jobs = [p.job for p in prepared]
    return prepared, why_not_stackable([j.model for j in jobs], [[p.phase for p in j.plan] for j in jobs], task,
                                       [j.stream_seed for j in jobs], runs[0].student_recipe.batch_size)


def _train_group(runs: list[Run], registry: Registry, out: Path, options: RunOptions, progress: Progress,
                 loggers: Sequence[LoggerSpec]) -> dict[str, RunOutcome] | str:
    """Train ``runs`` as one stacked model and store each run's result; or why they cannot be (a string),
    before anything trained."""
    first = runs[0]
    reason = static_reason(first, options)
    if reason is not None:
        return reason
    for run in runs:
        write_config(run, registry, run_dir(out, run.run_id))
        discard_unreadable(run_dir(out, run.run_id) / GROUP_STATE, "saved group state")
    task = build_task(first, registry, options.device, out)
    teacher, teacher_summary = cached_teacher(first, registry, out, task, None, options)
    budget = budget_flops(first, registry, task, options.device)  # the same for every seed: measured once
    prepared, why = plan_group(runs, registry, task, teacher, options, budget)
    if why is not None:
        return why
    jobs = [p.job for p in prepared]
    runlogs = [RunLog(run, registry, out, loggers) for run in runs]
    fidelity = fidelity_for(task, fidelity_teacher(first, out, task, teacher))  # one: it caches the teacher's side
    for k, (job, runlog) in enumerate(zip(jobs, runlogs)):
        job.state_path = None  # the group saves one state for all (train_stacked's state_path)
        job.on_step = progress_every(progress) if k == 0 else None
        job.on_record = chain(runlog.point, progress_recorder(progress, task.metric) if k == 0 else None)
        job.fidelity = fidelity
    stack = SeedStack([j.model for j in jobs], [p.phase for p in jobs[0].plan])
    state_path = run_dir(out, first.run_id) / GROUP_STATE
    try:
        results = train_stacked(jobs, stack, [r.run_id for r in runs], state_path)
    except BaseException:
        for runlog in runlogs:
            runlog.abort()
        raise
    outcomes = {}
    for run, prep, result, runlog in zip(runs, prepared, results, runlogs):
        folder = run_dir(out, run.run_id)
        summary = store_result(folder, run, registry, task, prep, result, (teacher, teacher_summary), options,
                               {"seed_group": {"size": len(runs), "runs": [r.run_id for r in runs]}})
        runlog.finish(summary)
        outcomes[run.run_id] = RunOutcome(summary, result.curve, prep, task)
    with contextlib.suppress(OSError):  # the results are stored: a leftover state must not fail the runs
        state_path.unlink(missing_ok=True)
        forget(state_path.parent, GROUP_STATE)
    return outcomes
