"""Teacher training, checkpointing and the teacher cache.

A teacher is keyed by (task, version, params, teacher seed, recipe) and trained
once per results folder, by the engine, however many methods and seeds use it.
It stores exactly the intermediate checkpoints some method asked for. A teacher
may instead be given: a state-dict file the suite names (``teacher_checkpoint``),
or pretrained weights the task loads itself (``TaskInstance.teacher_source()``,
e.g. a Hugging Face folder); a given teacher is recorded, never trained. Next to
``final.pt`` a teacher folder holds ``teacher.json``, what rebuilds the model
(:mod:`kdbench.run.students`).

Cached weights are checked before use (each file loads, with this teacher's keys
and shapes); a file that does not is discarded with a warning and rebuilt. A
teacher whose training fails is recorded as ``failed`` in its folder (summary and
traceback) and raises :class:`TeacherFailed`: the runs that need it fail, the
others go on.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn

from kdbench.api import Clock, Phase, Recipe, TaskInstance, logits
from kdbench.errors import FAILURES, UserError
from kdbench.files import atomic_torch_save, atomic_write_json
from kdbench.run.budget import eval_steps, measure_phases
from kdbench.run.engine import PlannedPhase, TrainJob, progress_every, progress_recorder, train
from kdbench.run.options import RunOptions, effective_precision
from kdbench.run.stop import stop_requested
from kdbench.run.integrity import forget, problem, record
from kdbench.run.store import discard_unreadable, read_json, teacher_dir, teacher_problems, write_failure
from kdbench.run.students import record_teacher
from kdbench.streams import derive_seed
from kdbench.suite.identity import Run


log = logging.getLogger("kdbench")


class TeacherFailed(Exception):
    """A teacher could not be trained or loaded; its message ("teacher X failed: ...") is the
    error of every run that needs it."""


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / "checkpoints" / f"step-{step:09d}.pt"


def new_teacher(task: TaskInstance, seed: int) -> nn.Module:
    torch.manual_seed(derive_seed("teacher-init", seed))
    return task.teacher_model()


def teacher_is_ready(folder: Path, checkpoints) -> bool:
    """Whether ``folder`` holds a finished teacher with ``checkpoints`` whose final weights and records
    verify (:mod:`kdbench.run.integrity`)."""
    summary = read_json(folder / "summary.json")
    if not isinstance(summary, dict) or summary.get("status") != "finished" or not (folder / "final.pt").exists():
        return False
    if problem(folder, "final.pt") or teacher_problems(folder):
        return False
    return all(checkpoint_path(folder, s).exists() for s in checkpoints)


def teacher_phase(model: nn.Module, steps: Optional[int] = None) -> Phase:
    """How a teacher learns: cross-entropy on the task's labels."""
    return Phase("teacher", loss=lambda b: F.cross_entropy(logits(model, b), b.labels), steps=steps)


def teacher_job(task: TaskInstance, seed: int, recipe: Recipe, eval_points: int, *,
                state_path: Optional[Path] = None, save_every_s: float = 60.0,
                on_step: Optional[Callable[[Clock], None]] = None, options: RunOptions = RunOptions()) -> TrainJob:
    """The engine job that trains the teacher of ``seed`` by ``recipe``, its step's FLOPs measured
    (on the task's device; ``options`` give its precision and compilation). The keyword arguments are
    what only the teacher cache needs (saving, progress), hence their number."""
    model = new_teacher(task, seed)
    phase = teacher_phase(model, recipe.steps)
    cost = measure_phases([phase], model, task, recipe.batch_size, next(model.parameters()).device)[0]
    return TrainJob(model=model, plan=[PlannedPhase(phase, recipe.steps, cost)], recipe=recipe, task=task,
                    stream_seed=derive_seed("teacher-data", seed),
                    eval_at=eval_steps([cost], [recipe.steps], eval_points), state_path=state_path,
                    save_every_s=save_every_s, on_step=on_step, should_stop=stop_requested,
                    precision=effective_precision(options.precision, next(model.parameters()).device),
                    compile=options.compile)


def ensure_teacher(out: Path, run: Run, task: TaskInstance, checkpoints: list[int],
                   progress: Optional[Callable[[int, int], None]] = None, options: RunOptions = RunOptions()) -> dict:
    """Train (or load) ``run``'s teacher unless the cache has it with every checkpoint in
    ``checkpoints``; return its summary. Safe against concurrent callers (file lock).
    ``options`` are passed to the engine (see :class:`TrainJob`). Raises
    :class:`TeacherFailed` (after recording it) if training or loading fails."""
    teacher_id, seed, source = run.teacher_id, run.teacher_seed, run.teacher_checkpoint
    folder = teacher_dir(out, teacher_id)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".lock")):
            verify_cache(folder, task, seed, checkpoints)
            repair_records(folder, task, seed)
            if teacher_is_ready(folder, checkpoints):
                return {**read_json(folder / "summary.json"), "cached": True}
            discard_unreadable(folder / "state.pt", "saved teacher state")
            try:
                if source is not None or task.teacher_source() is not None:
                    return _adopt_teacher(folder, teacher_id, task, seed, source, checkpoints)
                return _train_teacher(folder, run, task, checkpoints, progress, options)
            except UserError:
                raise
            except FAILURES as exc:
                raise TeacherFailed(record_teacher_failure(folder, teacher_id, exc)) from exc
    except (UserError, TeacherFailed):
        raise
    except FAILURES as exc:  # the cache folder itself cannot be used (read-only, a file in the way...)
        raise TeacherFailed(f"teacher {teacher_id} failed: {type(exc).__name__}: {exc}") from exc


def record_teacher_failure(folder: Path, teacher_id: str, exc: BaseException) -> str:
    """Write the failed teacher's summary and traceback (never raising); the message for its runs."""
    message = f"teacher {teacher_id} failed: {type(exc).__name__}: {exc}"
    note = write_failure(folder, {"teacher_id": teacher_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, traceback.format_exc())
    return f"{message} ({note})" if note else message


def verify_cache(folder: Path, task: TaskInstance, seed: int, checkpoints) -> None:
    """Discard (with a warning naming it) every stored weights file of the teacher, the final one
    and the ``checkpoints`` asked for, that does not load as this teacher's state dict."""
    with torch.random.fork_rng(devices=[]):  # building the model must not move the global stream
        expected = {k: tuple(v.shape) for k, v in new_teacher(task, seed).state_dict().items()}

    def fits(state) -> None:
        if not isinstance(state, dict) or {k: tuple(getattr(v, "shape", ())) for k, v in state.items()} != expected:
            raise ValueError("not a state dict of this teacher (keys or shapes differ)")

    for path in [folder / "final.pt", *(checkpoint_path(folder, s) for s in checkpoints)]:
        discard_unreadable(path, "teacher weights", fits, folder)


def repair_records(folder: Path, task: TaskInstance, seed: int) -> None:
    """Check the teacher's record files (:func:`kdbench.run.store.teacher_problems`) and mend what does not
    verify, with a warning naming the file: a bad summary.json or curve.json is discarded and the teacher
    retrained (the curve is known only by training); a bad teacher.json is rewritten from the model's spec."""
    problems = teacher_problems(folder)
    if not problems:
        return
    retrain = bool({"summary.json", "curve.json", "hashes.json"} & set(problems))
    for name, why in problems.items():
        log.warning(f"{folder / name}: {why}; " + ("the teacher will be retrained" if retrain else "rewritten"))
    if retrain:
        for name in ("summary.json", "curve.json"):
            (folder / name).unlink(missing_ok=True)
        return
    with torch.random.fork_rng(devices=[]):  # building the model must not move the global stream
        record_teacher(folder, new_teacher(task, seed), task)


def _adopt_teacher(folder, teacher_id, task, seed, checkpoint, checkpoints) -> dict:
    """Record a given teacher: the ``checkpoint`` file's state dict, else the task's pretrained teacher."""
    source = checkpoint if checkpoint is not None else task.teacher_source()
    what = "teacher_checkpoint" if checkpoint is not None else "pretrained teacher"
    if checkpoints:
        raise UserError(f"{what} {source}: a method in this suite reads intermediate teacher checkpoints "
                        f"(steps {checkpoints[:5]}...), and a given teacher has only its final weights")
    model = new_teacher(task, seed)
    if checkpoint is not None:
        try:
            model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise UserError(f"teacher_checkpoint {checkpoint}: not a state dict of this task's teacher: {exc}") from exc
    atomic_torch_save(model.state_dict(), folder / "final.pt")
    record(folder, "final.pt")
    record_teacher(folder, model, task)
    summary = {"teacher_id": teacher_id, "status": "finished", "given": what, "source": str(source), "steps": 0,
               "flops": 0, "wall_time": 0.0, "metrics": task.evaluate(freeze(model)), "checkpoints": [],
               "checkpoint_bytes": 0, "content_hashes": True}
    atomic_write_json(folder / "summary.json", summary)
    record(folder, "summary.json")
    return summary


def _train_teacher(folder: Path, run: Run, task: TaskInstance, checkpoints, progress, options: RunOptions) -> dict:
    """Train ``run``'s teacher in ``folder`` through the engine, storing ``checkpoints`` on the way."""
    recipe, wanted, report = run.teacher_recipe, set(checkpoints), progress_every(progress)

    def on_step(clock: Clock) -> None:
        if clock.step in wanted and clock.step < recipe.steps:
            atomic_torch_save(job.model.state_dict(), checkpoint_path(folder, clock.step))
            record(folder, checkpoint_path(folder, clock.step))
        report(clock)

    job = teacher_job(task, run.teacher_seed, recipe, run.eval.points, state_path=folder / "state.pt",
                      save_every_s=run.save_every_s, on_step=on_step, options=options)
    job.on_record = progress_recorder(progress, task.metric)
    model, cost = job.model, job.plan[0].step_flops
    result = train(job)
    if result.status != "finished":
        raise FloatingPointError(f"diverged at step {result.diverged_at} (its loss is not finite)")
    atomic_torch_save(model.state_dict(), folder / "final.pt")
    record(folder, "final.pt")
    record_teacher(folder, model, task)
    for step in wanted:  # the final step's "checkpoint" is the final teacher itself
        if step >= recipe.steps:
            atomic_torch_save(model.state_dict(), checkpoint_path(folder, step))
            record(folder, checkpoint_path(folder, step))
    missing = [s for s in wanted if not checkpoint_path(folder, s).exists()]
    if missing:
        # the state was resumed from a run that did not store these: retrain from scratch
        (folder / "state.pt").unlink(missing_ok=True)
        return _train_teacher(folder, run, task, checkpoints, progress, options)
    stored = sorted(folder.glob("checkpoints/*.pt"))
    final = {k: v for k, v in result.curve[-1].items() if k not in ("step", "samples", "flops", "phase", "time")}
    summary = {
        "teacher_id": run.teacher_id, "status": "finished", "steps": result.steps, "flops": result.flops,
        "step_flops": cost, "wall_time": result.wall_time, "metrics": final,
        "optimizer_kernel": result.optimizer_kernel,
        "checkpoints": sorted(int(p.stem.split("-")[1]) for p in stored),
        "checkpoint_bytes": sum(p.stat().st_size for p in stored), "recipe": recipe.model_dump(mode="json"),
        "precision": job.precision,
        "threads": torch.get_num_threads(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "content_hashes": True,  # its files' sha256 are in hashes.json (kdbench.run.integrity)
    }
    atomic_write_json(folder / "curve.json", result.curve)
    atomic_write_json(folder / "summary.json", summary)
    record(folder, "curve.json", "summary.json")
    (folder / "state.pt").unlink(missing_ok=True)
    forget(folder, "state.pt")
    return summary


class CachedTeacher:
    """:class:`kdbench.api.TeacherAccess` over a teacher folder: frozen models, loaded lazily."""

    def __init__(self, folder: Path, task: TaskInstance, seed: int, keep: int = 2):
        self.folder, self.task, self.seed, self.keep = Path(folder), task, seed, keep
        summary = read_json(self.folder / "summary.json") or {}
        self.checkpoint_steps: list[int] = summary.get("checkpoints", [])
        self.curve: list[dict] = read_json(self.folder / "curve.json") or []
        self._final: Optional[nn.Module] = None
        self._loaded: OrderedDict[int, nn.Module] = OrderedDict()
        self._compile = False

    def _load(self, path: Path) -> nn.Module:
        model = new_teacher(self.task, self.seed)
        device = next(model.parameters()).device
        try:
            model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        except Exception as exc:
            raise RuntimeError(f"{path}: cannot load the teacher's weights: {type(exc).__name__}: {exc}") from exc
        if self._compile:
            model.compile()
        return freeze(model)

    def compile(self) -> None:
        """torch.compile (in place) every teacher model loaded so far and from now on.
        Call it after FLOPs are measured: the counter must see the eager operations."""
        self._compile = True
        for model in [self._final, *self._loaded.values()]:
            if model is not None:
                model.compile()

    def final(self) -> nn.Module:
        if self._final is None:
            self._final = self._load(self.folder / "final.pt")
        return self._final

    def at(self, step: int) -> nn.Module:
        """The teacher as it was after ``step`` training steps (must have been stored)."""
        if step not in self._loaded:
            path = checkpoint_path(self.folder, step)
            if not path.exists():
                raise KeyError(f"teacher checkpoint at step {step} was not stored (have {self.checkpoint_steps})")
            self._loaded[step] = self._load(path)
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
        return self._loaded[step]


class ProbeTeacher:
    """Untrained stand-in with the teacher's shape: FLOPs do not depend on weights, so
    budgets and plans are measured with it before any teacher is trained."""

    def __init__(self, task: TaskInstance, seed: int, checkpoint_steps=()):
        self.model = freeze(new_teacher(task, seed))
        self.checkpoint_steps = list(checkpoint_steps)
        self.curve: list[dict] = []

    def final(self) -> nn.Module:
        return self.model

    def at(self, step: int) -> nn.Module:
        return self.model
