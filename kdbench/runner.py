"""Execute one run: build the task, fetch the teacher, ask the method for its phases,
measure and allot the budget, hand the job to the engine, and store the result."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from filelock import FileLock

from . import __version__
from .api import MethodContext, Recipe
from .budget import allot_steps, eval_steps, measure_step_flops
from .engine import TrainJob, seed_for_step, step_generator, train
from .errors import UserError
from .plugins import Registry
from .store import atomic_write_json, run_dir, run_is_done, teacher_dir
from .suite import Run
from .teachers import (STUDENT_STREAM, CachedTeacher, ProbeTeacher, checkpoint_path, ensure_teacher, init_seed,
                       stream_seed)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
                        generator=torch.Generator(device="cpu").manual_seed(init_seed(STUDENT_STREAM, run.seed)))
    return student, cls().phases(ctx, params)


def _measure(phases, student, task, batch_size: int, device) -> list[int]:
    """Per-step FLOPs of every phase, measured once per distinct ``cost_key``."""
    probe = task.train_batch(step_generator(device).manual_seed(seed_for_step(0, 0)), batch_size)
    params = list(student.parameters()) + [p for ph in phases for p in (ph.params or [])]
    cache: dict[str, int] = {}
    for ph in phases:
        if ph.cost_key not in cache:
            cache[ph.cost_key] = measure_step_flops(ph, probe, params)
    return [cache[ph.cost_key] for ph in phases]


def budget_flops(run: Run, registry: Registry, task, device) -> float:
    """The run's budget in FLOPs (measuring the reference method's step if the budget is in steps)."""
    if "flops" in run.budget:
        return float(run.budget["flops"])
    batch = Recipe.model_validate(run.student_recipe).batch_size
    student, phases = _phases(run, registry, task, ProbeTeacher(task, run.teacher_seed, run.checkpoints), device,
                              run.budget["method"], run.budget["method_params"])
    return float(run.budget["steps"] * _measure(phases[-1:], student, task, batch, device)[0])


def prepare(run: Run, registry: Registry, task, teacher, device, state_path: Optional[Path] = None,
            progress: Optional[Callable] = None) -> Prepared:
    """Turn a run into an engine job: phases, measured costs, allotted steps, eval points."""
    recipe = Recipe.model_validate(run.student_recipe)
    budget = budget_flops(run, registry, task, device)
    student, phases = _phases(run, registry, task, teacher, device, run.method, run.method_params)
    costs = _measure(phases, student, task, recipe.batch_size, device)
    steps = allot_steps(phases, costs, budget)
    job = TrainJob(model=student, phases=phases, steps=steps, step_flops=costs, recipe=recipe, task=task,
                   stream_seed=stream_seed(STUDENT_STREAM, run.seed),
                   eval_at=eval_steps(costs, steps, run.eval["points"]), state_path=state_path,
                   save_every_s=run.save_every_s, progress=progress)
    return Prepared(job, budget, steps, costs)


def execute_run(run: Run, registry: Registry, out: Path, device: torch.device,
                progress: Optional[Callable] = None, teacher_progress: Optional[Callable] = None) -> dict:
    """Run ``run`` unless its folder already holds a finished result; return its summary.

    A method that raises is recorded as ``failed`` with its traceback; the caller
    goes on with the other runs.
    """
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
                    teacher_progress)
                teacher = CachedTeacher(teacher_dir(out, run.teacher_id), task, run.teacher_seed)
            else:
                teacher = None
            prepared = prepare(run, registry, task, teacher, device, folder / "state.pt", progress)
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
        used = [s for s in (teacher.checkpoint_steps if teacher else []) if s in set(run.checkpoints)]
        checkpoint_bytes = sum(checkpoint_path(teacher.folder, s).stat().st_size for s in used)
        summary = {
            "run_id": run.run_id, "status": result.status, "diverged_at": result.diverged_at,
            "metric": task.metric, "higher_is_better": task.higher_is_better,
            "metrics": {k: v for k, v in final.items() if k not in ("step", "samples", "flops", "phase", "time")},
            "steps": result.steps, "flops": result.flops, "budget_flops": prepared.budget_flops,
            "wall_time": result.wall_time, "device": str(device),
            "phases": [{"name": ph.name, "steps": n, "step_flops": c, "teacher": ph.teacher, "depth": ph.depth}
                       for ph, n, c in zip(prepared.job.phases, prepared.phase_steps, prepared.phase_flops)],
            "teacher_id": run.teacher_id if needs_teacher else None,
            "teacher_flops": teacher_summary["flops"] if teacher_summary else 0,
            "checkpoints_used": len(used), "checkpoint_bytes": checkpoint_bytes,
        }
        atomic_write_json(folder / "curve.json", result.curve)
        atomic_write_json(folder / "summary.json", summary)
        (folder / "state.pt").unlink(missing_ok=True)
        return summary
