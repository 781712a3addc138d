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
field, before any teacher trains. So does every size that cannot run on the device: models,
batches and step counts are bounded by :mod:`kdbench.run.sizes` before anything is allocated
at full size.
"""

from __future__ import annotations

from typing import Optional

import torch

from kdbench.api import Phase, TaskInstance
from kdbench.errors import UserError, without_cpp_frames
from kdbench.plugins import Registry
from kdbench.run.budget import measure_phases
from kdbench.run.runner import budget_flops, build_task, prepare
from kdbench.run.sizes import MAX_STEPS, SizeCheck, build_failure, step_bytes
from kdbench.run.teachers import ProbeTeacher, new_teacher, teacher_phase
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
    convention), the exception's type and message otherwise (a bug); never torch's C++ stack frames."""
    text = " ".join(without_cpp_frames(exc).split())
    return text if isinstance(exc, (UserError, ValueError)) else f"{type(exc).__name__}: {text}"


def check_runs(loaded: LoadedSuite, registry: Registry, device: torch.device = torch.device("cpu"),
               target: Optional[torch.device] = None) -> dict[str, tuple[str, bool]]:
    """Raise :class:`UserError` (file, field, reason) for the first (task, method) pair of the
    suite that cannot train, or a claim naming a metric a task lacks; when every pair can, return
    what the probes learned of each task: ``{task label: (metric, higher_is_better)}``. The probes
    run on ``device``; sizes are bounded by the memory of ``target``, where the jobs will train
    (None: unknown, then only ``KDBENCH_MEMORY_LIMIT`` bounds them)."""
    suite, path, sizes = loaded.suite, loaded.path, SizeCheck(target)
    probes: dict[str, tuple[TaskInstance, ProbeTeacher, float, int]] = {}
    checked: set[tuple[str, str]] = set()
    for run in loaded.runs:
        if (run.task_label, run.method_label) in checked:
            continue
        checked.add((run.task_label, run.method_label))
        i, j = _index(suite.tasks, run.task_label), _index(suite.methods, run.method_label)
        task_where = f"tasks[{i}] ({run.task_label})"
        if run.task_label not in probes:
            probes[run.task_label] = _probe_task(loaded, registry, run, device, i, sizes)
        task, teacher, budget, teacher_bytes = probes[run.task_label]
        given = run.teacher_checkpoint or task.teacher_source()
        if run.checkpoints and given is not None:
            raise UserError(f"{path}: methods[{j}] ({run.method_label}) on {task_where}: reads intermediate teacher "
                            f"checkpoints (steps {list(run.checkpoints)[:5]}), and the teacher is given ({given}): "
                            "it has only its final weights; train the teacher instead, or use another method")
        try:
            prepared = prepare(run, registry, task, teacher, device, measure=estimated_phases, budget=budget)
        except (Exception, SystemExit) as exc:
            raise UserError(f"{path}: methods[{j}] ({run.method_label}) on {task_where}: {_failure(exc)}") from exc
        field = f"tasks[{i}].budget" if suite.tasks[i].budget is not None else "budget"
        if prepared.job.total_steps == 0:
            cheapest = min(p.step_flops for p in prepared.job.plan)
            raise UserError(f"{path}: {field}: {prepared.budget_flops:.3g} FLOPs do not pay for one step of "
                            f"{run.method_label} on {run.task_label} (about {cheapest:.3g} FLOPs a step)")
        if prepared.job.total_steps > MAX_STEPS:
            raise UserError(f"{path}: {field}: {prepared.budget_flops:.3g} FLOPs buy {prepared.job.total_steps:.3g} "
                            f"steps of {run.method_label} on {run.task_label}, more than {MAX_STEPS:.0e}: "
                            "a typo in the exponent?")
        name = f"{run.method_label} on {run.task_label}"
        sizes.check_time(f"{path}: {field}", name, prepared.job.total_steps, prepared.budget_flops)
        job, frozen = prepared.job, teacher_bytes if registry.methods[run.method].cls.needs_teacher else 0
        try:
            step = step_bytes([p.phase for p in job.plan], job.model, task, job.recipe.batch_size, device)
        except (Exception, SystemExit) as exc:
            raise UserError(f"{path}: methods[{j}] ({run.method_label}) on {task_where}: a step at a small batch "
                            f"fails: {_failure(exc)}") from exc
        sizes.check_step(f"{path}: tasks[{i}].student.batch_size", name, job.model, frozen, step,
                         job.recipe.batch_size)
    metrics = {label: (task.metric, bool(task.higher_is_better)) for label, (task, *_) in probes.items()}
    validate_claim_metrics(suite, path, metrics)  # a claim's metric may be the task's, known once it is built
    return metrics


def _given_params(where: str, given: dict) -> str:
    """``FILE: tasks[i].params (n: 100, depth: 3)``: the params field with the values the suite gives."""
    values = ", ".join(f"{key}: {value}" for key, value in given.items())
    return f"{where}.params ({values[:100]})" if values else f"{where}.params"


def check_model_sizes(task: TaskInstance, run: Run, where: str, sizes: SizeCheck) -> int:
    """The teacher and student of ``task`` sized on the meta device before either is built (``where``:
    the params field to name when one does not fit); the teacher's bytes."""
    size = sizes.check_model(where, f"the teacher of {run.task_label}", lambda: new_teacher(task, run.teacher_seed))
    sizes.check_model(where, f"the student of {run.task_label}", task.student_model)
    return size


def _check_teacher(task: TaskInstance, run: Run, where: str, params: str, sizes: SizeCheck,
                   device: torch.device, trained: bool) -> int:
    """The teacher and student of ``task`` sized before they are built (``params``: the field to
    name), then a step of the teacher (when ``trained``) and its steps bounded; the teacher's bytes."""
    name = f"the teacher of {run.task_label}"
    size = check_model_sizes(task, run, params, sizes)
    if trained:
        recipe = run.teacher_recipe
        model = new_teacher(task, run.teacher_seed)
        phases = [teacher_phase(model, recipe.steps)]
        try:
            step = step_bytes(phases, model, task, recipe.batch_size, device)
        except (Exception, SystemExit) as exc:
            raise UserError(f"{where} ({run.task_label}): a step of its teacher fails: {_failure(exc)}") from exc
        sizes.check_step(f"{where}.teacher.batch_size", name, model, 0, step, recipe.batch_size)
        flops = estimated_phases(phases, model, task, recipe.batch_size, device)[0] * recipe.steps
        sizes.check_time(f"{where}.teacher.steps", name, recipe.steps, flops)
    return size


def _probe_task(loaded: LoadedSuite, registry: Registry, run: Run, device: torch.device, i: int,
                sizes: SizeCheck) -> tuple[TaskInstance, ProbeTeacher, float, int]:
    """The task of ``run`` built once, an untrained teacher holding every checkpoint its runs read,
    the task's budget in FLOPs (estimated like the phases' costs) and its teacher's bytes, every
    size checked (:mod:`kdbench.run.sizes`) before the teacher is built."""
    where, label = f"{loaded.path}: tasks[{i}]", run.task_label
    sizes.check_time(f"{where}.teacher.steps", f"the teacher of {label}", run.teacher_recipe.steps, 0)
    runs = [r for r in loaded.runs if r.task_label == label]
    params = _given_params(where, loaded.suite.tasks[i].params)
    try:
        task = build_task(run, registry, device, None)
    except (Exception, SystemExit) as exc:
        too_big = build_failure(exc)
        if too_big:
            room = f"; {sizes.has} (allowed: {sizes.allowed})" if sizes.limit else ""
            raise UserError(f"{params}: {label} cannot be built with these params: {too_big}{room}") from exc
        raise UserError(f"{where} ({label}): the task cannot be built: {_failure(exc)}") from exc
    given = run.teacher_checkpoint or task.teacher_source()
    trained = not given and any(registry.methods[r.method].cls.needs_teacher for r in runs)
    teacher_bytes = _check_teacher(task, run, where, params, sizes, device, trained)
    try:
        teacher = ProbeTeacher(task, run.teacher_seed, sorted({s for r in runs for s in r.checkpoints}))
    except (Exception, SystemExit) as exc:
        raise UserError(f"{where} ({label}): the task cannot be built: {_failure(exc)}") from exc
    if run.teacher_checkpoint is not None:  # a given teacher must fit the task's teacher model
        try:
            teacher.model.load_state_dict(torch.load(run.teacher_checkpoint, map_location=device, weights_only=True))
        except RuntimeError as exc:
            raise UserError(f"{where}.teacher_checkpoint: {run.teacher_checkpoint} does not "
                            f"fit this task's teacher: {' '.join(str(exc).split())[:300]}") from exc
    try:
        return task, teacher, budget_flops(run, registry, task, device, estimated_phases, teacher), teacher_bytes
    except (Exception, SystemExit) as exc:
        raise UserError(f"{loaded.path}: budget: the budget's method {run.budget.method!r} cannot be measured on "
                        f"{label}: {_failure(exc)}") from exc
