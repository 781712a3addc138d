"""Execute one run, and train one teacher: the only two places where kdbench turns a
suite's run into training (launchers, the test helpers and ``kdbench plan`` call them).

A run builds its task, fetches its teacher from the cache (training it if
needed), asks the method for its phases, measures each phase's step FLOPs,
allots the budget, hands the job to the engine and stores the result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import traceback
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from filelock import FileLock

from kdbench import __version__, streams
from kdbench.api import MethodContext, Params, Phase, TaskInstance
from kdbench.errors import FAILURES, UserError
from kdbench.files import atomic_write_json
from kdbench.loggers.runlog import RunLog
from kdbench.loggers.selection import LoggerSpec
from kdbench.plugins import Registry
from kdbench.run.budget import allot_steps, eval_steps, measure_phases, probe_batch
from kdbench.run.engine import PlannedPhase, TrainJob, chain, progress_every, progress_recorder, train
from kdbench.run.fidelity import fidelity_for
from kdbench.run.integrity import fingerprints, forget, record
from kdbench.run.logit_cache import CachedLogits, forward_flops, measuring
from kdbench.run.options import RunOptions
from kdbench.run.stop import stop_requested
from kdbench.run.store import discard_unreadable, read_run, run_dir, teacher_dir, write_failure
from kdbench.run.students import keep_student
from kdbench.run.teachers import (CachedTeacher, ProbeTeacher, TeacherFailed, checkpoint_path, ensure_teacher,
                                  new_teacher, record_teacher_failure, teacher_is_ready, teacher_phase)
from kdbench.suite.identity import Run

log = logging.getLogger("kdbench")
# (steps done, total steps); one with a ``record(point, metric)`` method (kdbench.progress.JobProgress)
# also gets every curve point
Progress = Optional[Callable[[int, int], None]]
# measure(phases, model, task, batch_size, device) -> FLOPs of one step of each phase
Measure = Callable[[list[Phase], torch.nn.Module, TaskInstance, int, torch.device], list[int]]


@dataclass
class Prepared:
    """A run made concrete: the engine job (phases with measured per-step FLOPs and allotted
    steps) and the budget it was allotted from."""

    job: TrainJob
    budget_flops: float

    @property
    def phase_steps(self) -> list[int]:
        return [p.steps for p in self.job.plan]

    @property
    def phase_flops(self) -> list[int]:
        return [p.step_flops for p in self.job.plan]


@dataclass
class RunOutcome:
    """What :func:`execute_run` did: the summary it stored (or found), the curve, and, when it
    trained in this process, the prepared job (its phases and trained student) and the task."""

    summary: dict
    curve: Optional[list] = None
    prepared: Optional[Prepared] = None
    task: Optional[TaskInstance] = None
    error: Optional[Exception] = None  # what a failed run raised


def build_task(run: Run, registry: Registry, device: torch.device, out: Optional[Path]) -> TaskInstance:
    """The run's task instance (its data seed is the teacher seed; its cache the teacher's folder)."""
    cls = registry.tasks[run.task].cls
    params = run.task_params  # validated when the suite was expanded
    cache = teacher_dir(out, run.teacher_id) if out is not None else None
    return cls().build(params, streams.derive_seed("task", run.teacher_seed), device, cache)


def method_phases(run: Run, registry: Registry, task: TaskInstance, teacher, device: torch.device,
                  method: str, method_params: Params) -> tuple[torch.nn.Module, list[Phase], MethodContext]:
    """A fresh student and ``method``'s phases for it (the run's own method, or the budget's reference)."""
    cls = registry.methods[method].cls
    torch.manual_seed(streams.derive_seed("student-init", run.seed))
    student = task.student_model()
    ctx = MethodContext(task=task, student=student, teacher=teacher, teacher_recipe=run.teacher_recipe,
                        seed=run.seed, device=device, generator=streams.generator("method", run.seed),
                        make_teacher=lambda: new_teacher(task, run.teacher_seed))
    phases = cls().phases(ctx, method_params)
    if not isinstance(phases, (list, tuple)) or not all(isinstance(ph, Phase) for ph in phases):
        raise ValueError(f"phases() returned {type(phases).__name__}, not a list of Phase")
    if not phases:  # nothing to train, nothing to charge: no budget can be spent
        raise ValueError("phases() returned an empty list; a method trains in at least one Phase")
    return student, list(phases), ctx


def measure_cotrain(phases: list[Phase], task: TaskInstance, batch_size: int, device: torch.device,
                    measure: Measure = measure_phases) -> list[int]:
    """FLOPs of one co-training step for every phase that co-trains a model (0 elsewhere)."""
    cache: dict[int, int] = {}
    for ph in phases:
        if ph.cotrain is not None and id(ph.cotrain) not in cache:
            cotrain = Phase("cotrain", loss=ph.cotrain.loss)
            cache[id(ph.cotrain)] = measure([cotrain], ph.cotrain.model, task, batch_size, device)[0]
    return [cache[id(ph.cotrain)] if ph.cotrain is not None else 0 for ph in phases]


def teacher_training_flops(run: Run, task: TaskInstance, device: torch.device,
                           measure: Measure = measure_phases) -> int:
    """What training this run's cached teacher costs: its recipe's steps times one measured step
    (nothing for a given teacher: a checkpoint file or pretrained weights are not trained here)."""
    if run.teacher_checkpoint is not None or task.teacher_source() is not None:
        return 0
    model = new_teacher(task, run.teacher_seed)
    step = measure([teacher_phase(model)], model, task, run.teacher_recipe.batch_size, device)[0]
    return run.teacher_recipe.steps * step


def uses_cached_teacher(registry: Registry, method: str) -> bool:
    return registry.methods[method].cls.needs_teacher


def budget_flops(run: Run, registry: Registry, task: TaskInstance, device: torch.device,
                 measure: Measure = measure_phases, teacher: Optional[ProbeTeacher] = None) -> Optional[float]:
    """The run's budget in FLOPs (measuring the reference method's step if the budget is in steps,
    with ``teacher``, an untrained probe teacher of the task: a fresh one if not given).

    With ``counts: total`` a budget in steps also covers the reference method's
    cached-teacher training, so it compares with methods that train their own teacher. None for
    a budget in student steps (FLOPs are then reported, not matched)."""
    if run.budget.student_steps is not None:
        return None
    if run.budget.flops is not None:
        return float(run.budget.flops)
    ref = run.budget.method
    teacher = teacher or ProbeTeacher(task, run.teacher_seed, run.checkpoints)
    student, phases, _ = method_phases(run, registry, task, teacher, device, ref, run.budget.method_params)
    budget = run.budget.steps * measure(phases[-1:], student, task, run.student_recipe.batch_size, device)[0]
    if run.budget.counts_total and uses_cached_teacher(registry, ref):
        budget += teacher_training_flops(run, task, device, measure)
    return float(budget)


@dataclass
class Measured:
    """A run's student and phases with what one step of each costs (FLOPs; its co-trained model's too)."""

    student: torch.nn.Module
    phases: list[Phase]
    ctx: MethodContext
    costs: list[int]
    cotrain_costs: list[int]


def prepare(run: Run, registry: Registry, task: TaskInstance, teacher, options: RunOptions | torch.device,
            state_path: Optional[Path] = None, progress: Progress = None, measure: Measure = measure_phases,
            budget: Optional[float] = None) -> Prepared:
    """Turn a run into an engine job: phases, measured costs, allotted steps, eval points.

    ``options`` (or a bare device) says where and how it trains. The keyword arguments
    (all optional) are what only some callers need: where the job saves its state, a
    progress callback, a FLOP measure and a budget computed already.

    The budget counts student FLOPs (default) or, with ``counts: total``, also the
    teacher's training: a cached teacher's cost is taken off the top, and a
    co-trained teacher's steps are charged as they happen. ``measure`` gives the
    FLOPs of the phases' steps (validation passes a cheaper estimate); ``budget``,
    if given, is the run's :func:`budget_flops` computed already (it is the same for
    every run of a task entry)."""
    options = RunOptions.of(options)
    device, recipe, by_steps = options.device, run.student_recipe, run.budget.student_steps is not None
    if not by_steps and budget is None:
        budget = budget_flops(run, registry, task, device, measure)
    student, phases, ctx = method_phases(run, registry, task, teacher, device, run.method, run.method_params)
    with measuring(teacher):  # a logit cache's stand-in runs the real teacher: FLOPs as without the cache
        costs = measure(phases, student, task, recipe.batch_size, device)
        cotrain_costs = measure_cotrain(phases, task, recipe.batch_size, device, measure)
    measured = Measured(student, phases, ctx, costs, cotrain_costs)
    if by_steps:  # every method the same steps: a budget in steps is a FLOP budget at one FLOP a step
        steps = allot_steps(phases, [1] * len(phases), run.budget.student_steps)
        job = _job(run, task, measured, steps, [1] * len(phases), options, state_path, progress)
        return Prepared(job, float(sum(n * (c + t) for n, c, t in zip(steps, costs, cotrain_costs))))
    allot_costs, allot_budget = costs, budget
    if run.budget.counts_total:
        if uses_cached_teacher(registry, run.method):
            allot_budget = budget - teacher_training_flops(run, task, device, measure)
            if allot_budget <= 0:
                raise UserError(f"budget: {budget:.3g} FLOPs (counts: total) do not cover training the teacher "
                                f"({budget - allot_budget:.3g} FLOPs)")
        allot_costs = [c + -(-t // ph.cotrain.every) if ph.cotrain else c
                       for c, t, ph in zip(costs, cotrain_costs, phases)]
        allot_budget -= max(cotrain_costs)  # room for the rounding of co-training steps
    steps = allot_steps(phases, allot_costs, allot_budget)
    return Prepared(_job(run, task, measured, steps, costs, options, state_path, progress), budget)


def _job(run: Run, task: TaskInstance, measured: Measured, steps: list[int], eval_costs: list[int],
         options: RunOptions, state_path: Optional[Path], progress: Progress) -> TrainJob:
    """The engine job of a run whose steps are allotted; curve points evenly spaced in ``eval_costs``
    (the FLOPs of a step, or 1 for a budget in steps). Eight arguments: the run's three parts
    (run, task, measured phases), its allotment (steps, eval costs) and how it executes."""
    m = measured
    plan = [PlannedPhase(ph, n, c, t) for ph, n, c, t in zip(m.phases, steps, m.costs, m.cotrain_costs)]
    return TrainJob(model=m.student, plan=plan, recipe=run.student_recipe, task=task,
                    stream_seed=streams.derive_seed("student-data", run.seed),
                    eval_at=eval_steps(eval_costs, steps, run.eval.points), clock=m.ctx.clock,
                    state_path=state_path, save_every_s=run.save_every_s, on_step=progress_every(progress),
                    should_stop=stop_requested, precision=options.effective_precision, compile=options.compile)


def train_teacher(run: Run, checkpoints, registry: Registry, out: Path, options: RunOptions | torch.device,
                  progress: Progress = None) -> dict:
    """Make sure ``run``'s teacher is in the cache with ``checkpoints`` (training it if needed);
    return its summary, with the task's ranking metric under ``metric``. Raises
    :class:`TeacherFailed` (recorded in the teacher's folder) if it cannot be trained."""
    options = RunOptions.of(options)
    try:
        task = build_task(run, registry, options.device, out)
    except UserError:
        raise
    except FAILURES as exc:  # the task cannot even be built: its teacher fails with it
        raise TeacherFailed(record_teacher_failure(teacher_dir(out, run.teacher_id), run.teacher_id, exc)) from exc
    summary = ensure_teacher(out, run, task, sorted(checkpoints), progress, options)
    return {**summary, "metric": task.metric}


def execute_run(run: Run, registry: Registry, out: Path, options: RunOptions | torch.device,
                progress: Progress = None, teacher_progress: Progress = None, probe_teacher: bool = False,
                rerun: bool = False, loggers: Sequence[LoggerSpec] = (), **deprecated) -> RunOutcome:
    """Run ``run`` unless its folder already holds a finished result (``rerun``: even then);
    store its config, curve and summary; return what happened.

    Whatever a plugin raises (``SystemExit`` included), a teacher that fails, or a
    results file that cannot be written makes the run ``failed``, recorded with its
    traceback when the folder can still be written (see :func:`failed_outcome`); the
    caller goes on with the other runs. Only a UserError, Ctrl-C and a stop request
    propagate. ``options`` (a launch context's ``run_options``, or a bare ``torch.device``
    for fp32 without compiling) say where and how it trains. ``probe_teacher`` uses an
    untrained teacher of the right shape (tests of shapes and FLOPs). ``loggers`` (a
    launch context's ``loggers``) follow the run in experiment trackers. The progress
    callbacks get (steps done, total). kdbench 0.1's ``precision=`` and ``compile=``
    still work until 0.3, with a DeprecationWarning. (It is the call every launcher makes,
    with each argument optional but the first four, hence their number.)
    """
    options = _with_deprecated(RunOptions.of(options), deprecated)
    runlog = RunLog(run, registry, out, loggers)
    try:
        outcome = _locked_run(run, registry, out, options, (progress, teacher_progress), (probe_teacher, rerun),
                              runlog.point)
    except BaseException:
        runlog.abort()
        raise
    runlog.finish(outcome.summary)
    return outcome


def _with_deprecated(options: RunOptions, deprecated: dict) -> RunOptions:
    """``options`` with kdbench 0.1's ``precision=``/``compile=`` keyword arguments applied (warning)."""
    unknown = set(deprecated) - {"precision", "compile"}
    if unknown:
        raise TypeError(f"execute_run() got unexpected keyword arguments {sorted(unknown)}")
    if deprecated:
        warnings.warn("execute_run(precision=, compile=) is deprecated: pass RunOptions (ctx.run_options) "
                      "as its fourth argument; the keywords work until kdbench 0.3", DeprecationWarning, stacklevel=3)
        options = replace(options, **deprecated)
    return options


def _locked_run(run: Run, registry: Registry, out: Path, options: RunOptions, progress: tuple, flags: tuple,
                on_record: Callable[[dict], None]) -> RunOutcome:
    """:func:`execute_run` but for its loggers, which get every curve point through ``on_record``:
    take the run's lock, skip a finished run, record a failure. ``progress`` is (run's, teacher's)
    callbacks, ``flags`` (probe_teacher, rerun)."""
    (probe_teacher, rerun), folder, started = flags, run_dir(out, run.run_id), time.time()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / ".lock"))
        lock.acquire()
    except OSError as exc:
        return failed_outcome(run, folder, exc, started)
    try:
        skipped = None if rerun else finished_outcome(run, folder)
        if skipped is not None:
            return skipped
        return _execute(run, registry, out, options, progress, probe_teacher, on_record)
    except UserError:
        raise
    except FAILURES as exc:
        return failed_outcome(run, folder, exc, started)
    finally:
        lock.release()


def finished_outcome(run: Run, folder: Path) -> Optional[RunOutcome]:
    """The "skipped" outcome of a run whose folder (read under its lock) holds a finished result,
    else None; a damaged result is warned about (the run is redone)."""
    found = read_run(folder)
    if found.done:
        return RunOutcome({"status": "skipped", "run_id": run.run_id})
    if found.problem and found.problem != "config.json missing":
        log.warning(f"{folder}: {found.problem}; the run is redone")
    return None


def cached_teacher(run: Run, registry: Registry, out: Path, task: TaskInstance, progress: Progress,
                   options: RunOptions) -> tuple[Optional[CachedTeacher], Optional[dict]]:
    """The cached teacher ``run``'s method reads (trained first if needed, ``progress`` following it)
    and its summary; (None, None) for a method that needs none. (Six arguments: the run's parts.)"""
    if not uses_cached_teacher(registry, run.method):
        return None, None
    summary = ensure_teacher(out, run, task, list(run.checkpoints), progress, options)
    return CachedTeacher(teacher_dir(out, run.teacher_id), task, run.teacher_seed), summary


def _execute(run: Run, registry: Registry, out: Path, options: RunOptions, progress: tuple, probe_teacher: bool,
             on_record: Callable[[dict], None]) -> RunOutcome:
    """The body of :func:`execute_run`, under the run's lock: train (every curve point to
    ``on_record``) and store the result. ``progress`` is (run's, teacher's) callbacks."""
    folder, (progress, teacher_progress) = run_dir(out, run.run_id), progress
    write_config(run, registry, folder)
    discard_unreadable(folder / "state.pt", "saved run state")
    task = build_task(run, registry, options.device, out)
    if probe_teacher:
        teacher, teacher_summary = ProbeTeacher(task, run.teacher_seed, run.checkpoints), None
    else:
        teacher, teacher_summary = cached_teacher(run, registry, out, task, teacher_progress, options)
    access = logit_cache_of(run, out, teacher)  # what the method reads: the teacher, or its logit cache
    prepared = prepare(run, registry, task, access, options, folder / "state.pt", progress)
    cache_forward = logit_forward_flops(run, task, access, options)  # before compiling: eager FLOPs
    prepared.job.on_record = chain(on_record, progress_recorder(progress, task.metric))
    prepared.job.fidelity = fidelity_for(task, fidelity_teacher(run, out, task, teacher))
    if options.compile and isinstance(teacher, CachedTeacher):
        teacher.compile()  # after prepare: FLOPs are counted on the eager models
    result = train(prepared.job)
    extra = {"teacher_logits": access.stats(cache_forward)} if isinstance(access, CachedLogits) else {}
    summary = store_result(folder, run, registry, task, prepared, result, (teacher, teacher_summary), options, extra)
    return RunOutcome(summary, result.curve, prepared, task)


def store_result(folder: Path, run: Run, registry: Registry, task: TaskInstance, prepared: Prepared, result,
                 teacher: tuple, options: RunOptions, extra: dict) -> dict:
    """Write a trained run's student (if kept), curve and summary (with ``extra`` entries) into its
    ``folder`` and drop its saved state; return the summary. ``teacher`` is (teacher read, its summary).
    (The run's parts, what it trained and how: nine arguments.)"""
    kept = run.keep_students and result.status == "finished"
    student_bytes = keep_student(folder, prepared.job.model, task) if kept else 0
    summary = run_summary(run, registry, task, prepared, result, teacher, options)
    summary["student_bytes"] = student_bytes  # student.safetensors, student.json (kdbench.run.students)
    summary.update(extra)
    atomic_write_json(folder / "curve.json", result.curve)
    atomic_write_json(folder / "summary.json", summary)
    record(folder, "curve.json", "summary.json")
    for stale in ("state.pt", "traceback.txt"):  # a traceback of an earlier failed attempt
        with contextlib.suppress(OSError):  # the result is stored: leftovers must not fail the run
            (folder / stale).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        forget(folder, "state.pt")
    return summary


def logit_cache_of(run: Run, out: Path, teacher):
    """``teacher`` (a :class:`CachedTeacher`), or with the run's ``teacher_logits`` option a
    :class:`kdbench.run.logit_cache.CachedLogits` over it, whose ``final()`` reads the teacher's top-k cache."""
    if not run.teacher_logits or not isinstance(teacher, CachedTeacher):
        return teacher
    return CachedLogits(teacher, teacher_dir(out, run.teacher_id), int(run.teacher_logits["top_k"]))


def logit_forward_flops(run: Run, task: TaskInstance, access, options: RunOptions) -> int:
    """FLOPs of one final-teacher forward on a batch of the run (what each cache hit saves); 0 without a cache."""
    if not isinstance(access, CachedLogits):
        return 0
    return forward_flops(access.access.final(), probe_batch(task, run.student_recipe.batch_size, options.device))


def write_config(run: Run, registry: Optional[Registry], folder: Path) -> None:
    """Write the run's config.json (with kdbench's version and, given the ``registry``, the
    fingerprints of its method's and task's code) and record its sha256."""
    config = {**run.config(), "kdbench_version": __version__}
    if registry is not None:
        config["code"] = fingerprints(registry.methods[run.method].cls, registry.tasks[run.task].cls)
    atomic_write_json(folder / "config.json", config)
    record(folder, "config.json")


def fidelity_teacher(run: Run, out: Path, task: TaskInstance, teacher) -> Optional[torch.nn.Module]:
    """The final teacher a run's fidelity is measured against: the one it distils from, else (labels,
    methods that co-train their own) the task's teacher of its teacher seed when the cache holds it
    (the launchers start such runs after a teacher the same launch trains)."""
    if teacher is not None:
        return teacher.final()
    folder = teacher_dir(out, run.teacher_id) if run.teacher_id else None
    if folder is None or not teacher_is_ready(folder, []):
        return None
    return CachedTeacher(folder, task, run.teacher_seed).final()


def describe_error(exc: BaseException) -> str:
    """One line on what went wrong: a failed teacher's own message, else the exception's type and text."""
    if isinstance(exc, TeacherFailed):
        return str(exc)
    if isinstance(exc, SystemExit):
        return f"SystemExit: a plugin called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


def failed_outcome(run: Run, folder: Path, exc: BaseException, started: float) -> RunOutcome:
    """Record ``run`` as failed by ``exc`` (call it from the ``except`` block: it writes the traceback).
    Never raises: if the folder cannot be written, the summary says so under ``unrecorded``
    and the caller reports it. An ``OSError``'s errno is kept (``errno``: 28 is a full disk)."""
    summary = {"run_id": run.run_id, "status": "failed", "error": describe_error(exc),
               "wall_time": time.time() - started}
    if isinstance(exc, OSError) and exc.errno is not None:
        summary["errno"] = exc.errno
    note = write_failure(folder, summary, traceback.format_exc())
    if note is not None:
        summary["unrecorded"] = note
    return RunOutcome(summary, error=exc)


def fail_without_running(run: Run, out: Path, error: str) -> dict:
    """Record ``run`` as failed with ``error`` without starting it (its teacher failed); never raises."""
    folder = run_dir(out, run.run_id)
    summary = {"run_id": run.run_id, "status": "failed", "error": error, "wall_time": 0.0}
    try:
        write_config(run, None, folder)
    except OSError as exc:
        summary["unrecorded"] = f"not recorded on disk ({exc})"
        return summary
    note = write_failure(folder, summary, error + "\n")
    return {**summary, "unrecorded": note} if note else summary


def plain_json(obj):
    """``obj`` as JSON data (a phase's free-form ``info``): anything JSON cannot hold becomes its str()."""
    return json.loads(json.dumps(obj, default=str))


def run_summary(run: Run, registry: Registry, task: TaskInstance, prepared: Prepared, result, teacher: tuple,
                options: RunOptions) -> dict:
    """The summary.json of a run that trained: status, final metrics, costs, phases, teacher
    (``teacher`` is the teacher it read and the teacher's summary, or None for each)."""
    teacher, teacher_summary = teacher
    final = result.curve[-1] if result.curve else {}
    # teacher training behind this run: co-trained inside it, or the cached teacher's recorded cost
    teacher_train = result.teacher_flops + (teacher_summary["flops"] if teacher_summary else 0)
    stored = teacher.checkpoint_steps if isinstance(teacher, CachedTeacher) else []
    used = [s for s in stored if s in set(run.checkpoints)]
    needs_teacher = uses_cached_teacher(registry, run.method)
    return {
        "run_id": run.run_id, "status": result.status, "diverged_at": result.diverged_at,
        "content_hashes": True,  # its files' sha256 are in hashes.json (kdbench.run.integrity)
        "resumed_from": result.resumed_from,
        "metric": task.metric, "higher_is_better": task.higher_is_better,
        "metrics": {k: v for k, v in final.items()
                    if k not in ("step", "samples", "flops", "teacher_flops", "phase", "time")},
        "steps": result.steps, "flops": result.flops, "budget_flops": prepared.budget_flops,
        "wall_time": result.wall_time, "device": str(options.device), "precision": options.effective_precision,
        "compiled": options.compile, "optimizer_kernel": result.optimizer_kernel,
        "threads": torch.get_num_threads(),  # other thread counts give close, not bit-identical, numbers on CPU
        "phases": [{"name": p.phase.name, "steps": p.steps, "step_flops": p.step_flops, "teacher": p.phase.teacher,
                    "depth": p.phase.depth, "info": plain_json(p.phase.info)} for p in prepared.job.plan],
        "teacher_id": run.teacher_id if needs_teacher else None,
        "teacher_flops": teacher_summary["flops"] if teacher_summary else 0,
        "teacher_train_flops": teacher_train, "total_flops": result.flops + teacher_train,
        "budget_counts": run.budget.counts,
        "checkpoints_used": len(used),
        "checkpoint_bytes": sum(checkpoint_path(teacher.folder, s).stat().st_size for s in used),
    }
