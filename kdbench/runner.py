"""Execute one run: build the task, fetch the teacher, ask the method for its phases,
measure and allot the budget, hand the job to the engine, and store the result."""

from __future__ import annotations

import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from filelock import FileLock

from . import __version__
import torch.nn.functional as F

from .api import MethodContext, Phase, Recipe, logits
from .budget import allot_steps, eval_steps, measure_step_flops
from .engine import TrainJob, seed_for_step, step_generator, train
from .errors import UserError
from .plugins import Registry
from .store import atomic_write_json, run_dir, run_is_done, teacher_dir
from .suite import Run
from .teachers import (STUDENT_STREAM, CachedTeacher, ProbeTeacher, checkpoint_path, ensure_teacher, init_seed,
                       new_teacher, stream_seed)


DEVICES = "auto, cpu, cuda, cuda:N"
PRECISIONS = ("fp32", "bf16")


def check_device_spec(device: str) -> str:
    """``device`` if it names a device kdbench can use (auto, cpu, cuda, cuda:N), else a UserError.
    Only the spelling is checked: a scheduler's job may have a GPU the submitting machine lacks."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise UserError(f"--device: {device!r} is not a device; allowed: {DEVICES}")
    return device


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; asking for a GPU this machine lacks is a UserError."""
    if check_device_spec(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise UserError(f"--device {device}: CUDA is not available here ({why}); use auto or cpu")
        if dev.index is not None and dev.index >= count:
            raise UserError(f"--device {device}: only {count} GPU(s) here (cuda:0..cuda:{count - 1})")
    return dev


def effective_precision(precision: str, device: torch.device) -> str:
    """What the engine will actually use: bf16 autocast runs on CUDA only, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision: {precision!r} is not a precision; allowed: {', '.join(PRECISIONS)}")
    return "bf16" if precision == "bf16" and device.type == "cuda" else "fp32"


@dataclass
class Prepared:
    """A run made concrete: its phases with measured per-step FLOPs and allotted steps."""

    job: TrainJob
    budget_flops: float
    phase_steps: list[int]
    phase_flops: list[int]


def build_task(run: Run, registry: Registry, device: torch.device, out: Optional[Path]):
    cls = registry.tasks[run.task].cls
    params = cls.Params.model_validate(run.task_params)
    cache = teacher_dir(out, run.teacher_id) if out is not None else None
    return cls().build(params, run.teacher_seed, device, cache)


def _phases(run: Run, registry: Registry, task, teacher, device, method: str, method_params: dict):
    cls = registry.methods[method].cls
    params = cls.Params.model_validate(method_params)
    torch.manual_seed(init_seed(STUDENT_STREAM, run.seed))
    student = task.student_model()
    ctx = MethodContext(task=task, student=student, teacher=teacher,
                        teacher_recipe=Recipe.model_validate(run.teacher_recipe), seed=run.seed, device=device,
                        generator=torch.Generator(device="cpu").manual_seed(init_seed(STUDENT_STREAM, run.seed)),
                        make_teacher=lambda: new_teacher(task, run.teacher_seed))
    return student, cls().phases(ctx, params), ctx


def _probe_batch(task, batch_size: int, device):
    return task.train_batch(step_generator(device).manual_seed(seed_for_step(0, 0)), batch_size)


def _measure(phases, student, task, batch_size: int, device) -> list[int]:
    """Per-step FLOPs of every phase, measured once per distinct ``cost_key``."""
    probe = _probe_batch(task, batch_size, device)
    params = list(student.parameters()) + [p for ph in phases for p in (ph.params or [])]
    cache: dict[str, int] = {}
    for ph in phases:
        if ph.cost_key not in cache:
            cache[ph.cost_key] = measure_step_flops(ph, probe, params)
    return [cache[ph.cost_key] for ph in phases]


def _measure_cotrain(phases, task, batch_size: int, device) -> list[int]:
    """FLOPs of one co-training step for every phase that co-trains a model (0 elsewhere)."""
    probe = _probe_batch(task, batch_size, device)
    cache: dict[int, int] = {}
    for ph in phases:
        if ph.cotrain is not None and id(ph.cotrain) not in cache:
            cache[id(ph.cotrain)] = measure_step_flops(Phase("cotrain", loss=ph.cotrain.loss), probe,
                                                       ph.cotrain.model.parameters())
    return [cache[id(ph.cotrain)] if ph.cotrain is not None else 0 for ph in phases]


def teacher_training_flops(run: Run, task, device) -> int:
    """What training this run's cached teacher costs: its recipe's steps times one measured step."""
    recipe = Recipe.model_validate(run.teacher_recipe)
    model = new_teacher(task, run.teacher_seed)
    phase = Phase("teacher", loss=lambda b: F.cross_entropy(logits(model, b), b.labels))
    return recipe.steps * measure_step_flops(phase, _probe_batch(task, recipe.batch_size, device), model.parameters())


def counts_total(run: Run) -> bool:
    return run.budget.get("counts", "student") == "total"


def uses_cached_teacher(registry: Registry, method: str) -> bool:
    return registry.methods[method].cls.needs_teacher


def budget_flops(run: Run, registry: Registry, task, device) -> float:
    """The run's budget in FLOPs (measuring the reference method's step if the budget is in steps).

    With ``counts: total`` a budget in steps also covers the reference method's
    cached-teacher training, so it compares with methods that train their own teacher."""
    if "flops" in run.budget:
        return float(run.budget["flops"])
    batch = Recipe.model_validate(run.student_recipe).batch_size
    ref = run.budget["method"]
    student, phases, _ = _phases(run, registry, task, ProbeTeacher(task, run.teacher_seed, run.checkpoints), device,
                                 ref, run.budget["method_params"])
    budget = run.budget["steps"] * _measure(phases[-1:], student, task, batch, device)[0]
    if counts_total(run) and uses_cached_teacher(registry, ref):
        budget += teacher_training_flops(run, task, device)
    return float(budget)


def prepare(run: Run, registry: Registry, task, teacher, device, state_path: Optional[Path] = None,
            progress: Optional[Callable] = None, precision: str = "fp32", compile: bool = False) -> Prepared:
    """Turn a run into an engine job: phases, measured costs, allotted steps, eval points.

    The budget counts student FLOPs (default) or, with ``counts: total``, also the
    teacher's training: a cached teacher's cost is taken off the top, and a
    co-trained teacher's steps are charged as they happen."""
    recipe = Recipe.model_validate(run.student_recipe)
    budget = budget_flops(run, registry, task, device)
    student, phases, ctx = _phases(run, registry, task, teacher, device, run.method, run.method_params)
    costs = _measure(phases, student, task, recipe.batch_size, device)
    cotrain_costs = _measure_cotrain(phases, task, recipe.batch_size, device)
    allot_costs, allot_budget = costs, budget
    if counts_total(run):
        if uses_cached_teacher(registry, run.method):
            allot_budget = budget - teacher_training_flops(run, task, device)
            if allot_budget <= 0:
                raise UserError(f"budget: {budget:.3g} FLOPs (counts: total) do not cover training the teacher "
                                f"({budget - allot_budget:.3g} FLOPs)")
        allot_costs = [c + -(-t // ph.cotrain.every) if ph.cotrain else c
                       for c, t, ph in zip(costs, cotrain_costs, phases)]
        allot_budget -= max(cotrain_costs)  # room for the rounding of co-training steps
    steps = allot_steps(phases, allot_costs, allot_budget)
    job = TrainJob(model=student, phases=phases, steps=steps, step_flops=costs, recipe=recipe, task=task,
                   stream_seed=stream_seed(STUDENT_STREAM, run.seed),
                   eval_at=eval_steps(costs, steps, run.eval["points"]), state_path=state_path,
                   save_every_s=run.save_every_s, progress=progress, precision=precision, compile=compile,
                   cotrain_flops=cotrain_costs, clock=ctx.clock)
    return Prepared(job, budget, steps, costs)


def execute_run(run: Run, registry: Registry, out: Path, device: torch.device,
                progress: Optional[Callable] = None, teacher_progress: Optional[Callable] = None,
                precision: str = "fp32", compile: bool = False) -> dict:
    """Run ``run`` unless its folder already holds a finished result; return its summary.

    A method that raises is recorded as ``failed`` with its traceback; the caller
    goes on with the other runs. ``precision="bf16"`` autocasts the losses on CUDA;
    ``compile`` torch.compiles student and teacher after their FLOPs are measured.
    """
    precision = effective_precision(precision, device)
    folder = run_dir(out, run.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".lock")):
        if run_is_done(out, run.run_id):
            return {"status": "skipped", "run_id": run.run_id}
        atomic_write_json(folder / "config.json", {**run.config(), "kdbench_version": __version__})
        started = time.time()
        try:
            task = build_task(run, registry, device, out)
            needs_teacher = registry.methods[run.method].cls.needs_teacher
            teacher_summary = None
            if needs_teacher:
                teacher_summary = ensure_teacher(
                    out, run.teacher_id, task, run.teacher_seed, Recipe.model_validate(run.teacher_recipe),
                    list(run.checkpoints), run.teacher_checkpoint, run.eval["points"], run.save_every_s,
                    teacher_progress, precision=precision, compile=compile)
                teacher = CachedTeacher(teacher_dir(out, run.teacher_id), task, run.teacher_seed)
            else:
                teacher = None
            prepared = prepare(run, registry, task, teacher, device, folder / "state.pt", progress,
                               precision, compile)
            if compile and teacher is not None:
                teacher.compile()  # after prepare: FLOPs are counted on the eager models
            result = train(prepared.job)
        except KeyboardInterrupt:
            raise
        except UserError:
            raise
        except Exception as exc:
            (folder / "traceback.txt").write_text(traceback.format_exc())
            summary = {"run_id": run.run_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                       "wall_time": time.time() - started}
            atomic_write_json(folder / "summary.json", summary)
            return summary
        final = result.curve[-1] if result.curve else {}
        # teacher training behind this run: co-trained inside it, or the cached teacher's recorded cost
        teacher_train = result.teacher_flops + (teacher_summary["flops"] if teacher_summary else 0)
        used = [s for s in (teacher.checkpoint_steps if teacher else []) if s in set(run.checkpoints)]
        checkpoint_bytes = sum(checkpoint_path(teacher.folder, s).stat().st_size for s in used)
        summary = {
            "run_id": run.run_id, "status": result.status, "diverged_at": result.diverged_at,
            "resumed_from": result.resumed_from,
            "metric": task.metric, "higher_is_better": task.higher_is_better,
            "metrics": {k: v for k, v in final.items()
                        if k not in ("step", "samples", "flops", "teacher_flops", "phase", "time")},
            "steps": result.steps, "flops": result.flops, "budget_flops": prepared.budget_flops,
            "wall_time": result.wall_time, "device": str(device), "precision": precision, "compiled": compile,
            "phases": [{"name": ph.name, "steps": n, "step_flops": c, "teacher": ph.teacher, "depth": ph.depth}
                       for ph, n, c in zip(prepared.job.phases, prepared.phase_steps, prepared.phase_flops)],
            "teacher_id": run.teacher_id if needs_teacher else None,
            "teacher_flops": teacher_summary["flops"] if teacher_summary else 0,
            "teacher_train_flops": teacher_train, "total_flops": result.flops + teacher_train,
            "budget_counts": run.budget.get("counts", "student"),
            "checkpoints_used": len(used), "checkpoint_bytes": checkpoint_bytes,
        }
        atomic_write_json(folder / "curve.json", result.curve)
        atomic_write_json(folder / "summary.json", summary)
        (folder / "state.pt").unlink(missing_ok=True)
        return summary
