"""Every error a suite can hold, caught before anything trains.

The schema (:mod:`kdbench.suite`) checks types, ranges and each plugin's params.
:func:`check_runs` goes as far as ``kdbench plan`` does without training: it
builds each task once and, for every (task, method) pair of the suite, asks the
method for its phases on probe models (an untrained teacher of the right shape
and a fresh student), takes one step of every phase on a small probe batch, and
allots the budget from those step costs scaled to the real batch size (FLOPs
grow linearly with the batch). So a layer the student does not have, a loss
that would train nothing, a budget too small for a single step or one that
cannot pay for the teacher all end with exit code 2, naming the file and the
field, before any teacher trains.
"""

from __future__ import annotations

import torch

from kdbench.api import Phase, TaskInstance
from kdbench.errors import UserError
from kdbench.plugins import Registry
from kdbench.run.budget import measure_phases
from kdbench.run.runner import budget_flops, build_task, prepare
from kdbench.run.teachers import ProbeTeacher
from kdbench.suite.claims import validate_claim_metrics
from kdbench.suite.expand import LoadedSuite
from kdbench.suite.identity import Run

PROBE_BATCH = 2  # examples per probe step (2: batch relations need a pair): shapes and gradients are checked, FLOPs scaled up


def estimated_phases(phases: list[Phase], model: torch.nn.Module, task: TaskInstance, batch_size: int,
                     device: torch.device) -> list[int]:
    """Per-step FLOPs of ``phases`` at ``batch_size``, from a step at a small batch scaled linearly."""
    small = min(batch_size, PROBE_BATCH)
    return [-(-flops * batch_size // small) for flops in measure_phases(phases, model, task, small, device)]


def _index(entries, label: str) -> int:
    return next(i for i, e in enumerate(entries) if (e.label or e.name) == label)


def _failure(exc: BaseException) -> str:
    """A plugin's error as one line: the message of a UserError or ValueError (a bad param, by
    convention), the exception's type and message otherwise (a bug)."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, (UserError, ValueError)) else f"{type(exc).__name__}: {text}"


MAX_STEPS = 10**9  # more student steps than any run could take: the budget is a typo


def check_runs(loaded: LoadedSuite, registry: Registry,
               device: torch.device = torch.device("cpu")) -> dict[str, tuple[str, bool]]:
    """Raise :class:`UserError` (file, field, reason) for the first (task, method) pair of the
    suite that cannot train, or a claim naming a metric a task lacks; when every pair can, return
    what the probes learned of each task: ``{task label: (metric, higher_is_better)}``."""
    suite, path = loaded.suite, loaded.path
    probes: dict[str, tuple[TaskInstance, ProbeTeacher, float]] = {}
    checked: set[tuple[str, str]] = set()
    for run in loaded.runs:
        if (run.task_label, run.method_label) in checked:
            continue
        checked.add((run.task_label, run.method_label))
        i, j = _index(suite.tasks, run.task_label), _index(suite.methods, run.method_label)
        task_where = f"tasks[{i}] ({run.task_label})"
        if run.task_label not in probes:
            probes[run.task_label] = _probe_task(loaded, registry, run, device, f"{path}: {task_where}")
        task, teacher, budget = probes[run.task_label]
        given = run.teacher_checkpoint or task.teacher_source()
        if run.checkpoints and given is not None:
            raise UserError(f"{path}: methods[{j}] ({run.method_label}) on {task_where}: reads intermediate teacher "
                            f"checkpoints (steps {list(run.checkpoints)[:5]}), and the teacher is given ({given}): "
                            "it has only its final weights; train the teacher instead, or use another method")
        try:
            prepared = prepare(run, registry, task, teacher, device, measure=estimated_phases, budget=budget)
        except (Exception, SystemExit) as exc:
            raise UserError(f"{path}: methods[{j}] ({run.method_label}) on {task_where}: {_failure(exc)}") from exc
        if prepared.job.total_steps == 0:
            field = f"tasks[{i}].budget" if suite.tasks[i].budget is not None else "budget"
            cheapest = min(p.step_flops for p in prepared.job.plan)
            raise UserError(f"{path}: {field}: {prepared.budget_flops:.3g} FLOPs do not pay for one step of "
                            f"{run.method_label} on {run.task_label} (about {cheapest:.3g} FLOPs a step)")
        if prepared.job.total_steps > MAX_STEPS:
            field = f"tasks[{i}].budget" if suite.tasks[i].budget is not None else "budget"
            raise UserError(f"{path}: {field}: {prepared.budget_flops:.3g} FLOPs buy {prepared.job.total_steps:.3g} "
                            f"steps of {run.method_label} on {run.task_label}, more than {MAX_STEPS:.0e}: "
                            "a typo in the exponent?")
    metrics = {label: (task.metric, bool(task.higher_is_better)) for label, (task, _, _) in probes.items()}
    validate_claim_metrics(suite, path, metrics)  # a claim's metric may be the task's, known once it is built
    return metrics


def _probe_task(loaded: LoadedSuite, registry: Registry, run: Run, device: torch.device,
                where: str) -> tuple[TaskInstance, ProbeTeacher, float]:
    """The task of ``run`` built once, an untrained teacher holding every checkpoint its runs read,
    and the task's budget in FLOPs (estimated like the phases' costs)."""
    steps = sorted({s for r in loaded.runs if r.task_label == run.task_label for s in r.checkpoints})
    try:
        task = build_task(run, registry, device, None)
        teacher = ProbeTeacher(task, run.teacher_seed, steps)
    except (Exception, SystemExit) as exc:
        raise UserError(f"{where}: the task cannot be built: {_failure(exc)}") from exc
    if run.teacher_checkpoint is not None:  # a given teacher must fit the task's teacher model
        try:
            teacher.model.load_state_dict(torch.load(run.teacher_checkpoint, map_location=device, weights_only=True))
        except RuntimeError as exc:
            index = where.rsplit("tasks[", 1)[1].split("]")[0]
            raise UserError(f"{loaded.path}: tasks[{index}].teacher_checkpoint: {run.teacher_checkpoint} does not "
                            f"fit this task's teacher: {' '.join(str(exc).split())[:300]}") from exc
    try:
        return task, teacher, budget_flops(run, registry, task, device, estimated_phases, teacher)
    except (Exception, SystemExit) as exc:
        raise UserError(f"{loaded.path}: budget: the budget's method {run.budget.method!r} cannot be measured on "
                        f"{run.task_label}: {_failure(exc)}") from exc
