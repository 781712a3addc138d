"""THE training loop: every model kdbench trains (teachers and students) goes through `train`.

A :class:`TrainJob` says what to train (a model, its phases with allotted steps
and measured per-step FLOPs, an optimizer recipe, a data stream) and when to
evaluate. The loop samples a batch, takes the phase's loss, steps the optimizer,
charges the phase's FLOPs and records the curve; it saves its state now and then
so an interrupted job resumes exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from .api import Clock, CoTrain, Phase, Recipe, TaskInstance
from .store import atomic_torch_save

CurvePoint = dict


@dataclass
class TrainJob:
    """What the engine trains, for how long, and what it records."""

    model: nn.Module
    phases: list[Phase]
    steps: list[int]
    step_flops: list[int]
    recipe: Recipe
    task: TaskInstance
    stream_seed: int
    eval_at: list[int]
    state_path: Optional[Path] = None
    save_every_s: float = 60.0
    after_step: Optional[Callable[[int], None]] = None  # e.g. store a teacher checkpoint
    progress: Optional[Callable[[int, int], None]] = None  # (step, total steps)
    cotrain_flops: Optional[list[int]] = None  # per phase: FLOPs of one step of its CoTrain (if any)
    clock: Optional[Clock] = None  # updated before every loss call
    precision: str = "fp32"  # "bf16": autocast the loss to bfloat16 (CUDA only; fp32 elsewhere)
    compile: bool = False  # torch.compile the model in place (after its FLOPs were measured)

    @property
    def total_steps(self) -> int:
        return sum(self.steps)

    @property
    def total_flops(self) -> int:
        return sum(c * n for c, n in zip(self.step_flops, self.steps))


@dataclass
class TrainResult:
    """The outcome of a job: its curve and how it ended."""

    curve: list[CurvePoint]
    status: str  # "finished" or "diverged"
    steps: int
    flops: int
    wall_time: float
    diverged_at: Optional[int] = None
    phase_flops: dict[str, int] = field(default_factory=dict)
    resumed_from: Optional[int] = None  # the step a saved state resumed from
    teacher_flops: int = 0  # FLOPs spent co-training a teacher inside this job


def trainable_parameters(model: nn.Module, phases: list[Phase]) -> list[nn.Parameter]:
    """The model's parameters, then any extra ones a phase trains (e.g. a regressor), once each."""
    seen, params = set(), []
    for p in [*model.parameters(), *(p for ph in phases for p in (ph.params or []))]:
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            params.append(p)
    return params


def make_optimizer(params: list[nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
    """The optimizer a recipe names (fused kernels where PyTorch has them: same maths, faster)."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay, foreach=True)


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int):
    """Linear warm-up for ``recipe.warmup`` of the steps, then constant, cosine or linear decay to 0."""
    warmup = int(recipe.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if recipe.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return max(0.0, 1 - progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_generator(device: torch.device) -> torch.Generator:
    return torch.Generator(device=device)


def seed_for_step(stream_seed: int, step: int) -> int:
    """A distinct, reproducible seed for every (stream, step): data never depends on history."""
    return (stream_seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 1) % (2**63 - 1)


class StopRequested(BaseException):
    """Raised by :func:`train` at a step boundary, after saving its state, once
    :func:`request_stop` was called (a scheduler's preemption or time-limit signal).
    A BaseException, like KeyboardInterrupt, so "record the failure" handlers let it pass."""


_stop = threading.Event()


def request_stop() -> None:
    """Ask every running :func:`train` loop of this process to save its state and raise
    :class:`StopRequested` at the end of its current step (safe to call from a signal handler)."""
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def clear_stop() -> None:
    _stop.clear()


def autocast_for(job: TrainJob, device: torch.device):
    """The context the loss runs in: bf16 autocast when asked for on CUDA, else nothing."""
    if job.precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _CoTrainer:
    """Steps a :class:`CoTrain` model in lockstep with the student, with its own optimizer."""

    def __init__(self, spec: CoTrain, cost: int):
        self.spec, self.cost, self.steps = spec, cost, 0
        self.params = [p for p in spec.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, spec.recipe)
        self.schedule = make_schedule(self.optimizer, spec.recipe, spec.total_steps)

    def step(self, student_step: int, batch, amp) -> int:
        """One co-training step if this student step is due; returns the FLOPs it spent."""
        if student_step % self.spec.every or self.steps >= self.spec.total_steps:
            return 0
        with amp:
            loss = self.spec.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.spec.recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.spec.recipe.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.steps += 1
        if self.spec.target is not None and (self.steps % self.spec.refresh == 0
                                             or self.steps == self.spec.total_steps):
            self.spec.target.load_state_dict(self.spec.model.state_dict())
        return self.cost

    def state_dict(self) -> dict:
        return {"steps": self.steps, "model": self.spec.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "target": self.spec.target.state_dict() if self.spec.target is not None else {}}

    def load_state_dict(self, saved: dict) -> None:
        self.steps = saved["steps"]
        self.spec.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        if self.spec.target is not None:
            self.spec.target.load_state_dict(saved["target"])


def _cotrainers(job: TrainJob) -> list[Optional[_CoTrainer]]:
    """One co-trainer per distinct CoTrain, indexed by phase (None where a phase has none)."""
    made: dict[int, _CoTrainer] = {}
    per_phase = []
    for i, ph in enumerate(job.phases):
        if ph.cotrain is None:
            per_phase.append(None)
            continue
        if id(ph.cotrain) not in made:
            made[id(ph.cotrain)] = _CoTrainer(ph.cotrain, (job.cotrain_flops or [0] * len(job.phases))[i])
        per_phase.append(made[id(ph.cotrain)])
    return per_phase


class _State:
    """Mutable loop state that is saved and restored for resumption."""

    def __init__(self):
        self.step = 0
        self.flops = 0
        self.curve: list[CurvePoint] = []
        self.loss_sum = 0.0
        self.loss_count = 0
        self.wall = 0.0
        self.teacher_flops = 0


def _save_state(job: TrainJob, state: _State, params, optimizer, schedule, cotrainers=()) -> None:
    atomic_torch_save({
        "step": state.step, "flops": state.flops, "curve": state.curve, "wall": state.wall,
        "loss_sum": state.loss_sum, "loss_count": state.loss_count, "teacher_flops": state.teacher_flops,
        "cotrain": [c.state_dict() for c in _distinct(cotrainers)],
        "model": job.model.state_dict(), "params": [p.detach().clone() for p in params],
        "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }, job.state_path)


def _distinct(cotrainers) -> list[_CoTrainer]:
    seen, out = set(), []
    for c in cotrainers:
        if c is not None and id(c) not in seen:
            seen.add(id(c))
            out.append(c)
    return out


def _load_state(job: TrainJob, state: _State, params, optimizer, schedule, cotrainers=()) -> bool:
    if job.state_path is None or not Path(job.state_path).exists():
        return False
    saved = torch.load(job.state_path, map_location="cpu", weights_only=True)
    job.model.load_state_dict(saved["model"])
    with torch.no_grad():
        for p, value in zip(params, saved["params"]):
            p.copy_(value)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"]:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    for key in ("step", "flops", "curve", "wall", "loss_sum", "loss_count", "teacher_flops"):
        setattr(state, key, saved[key])
    for c, c_saved in zip(_distinct(cotrainers), saved["cotrain"]):
        c.load_state_dict(c_saved)
    return True


def _record(job: TrainJob, state: _State, phase: str) -> None:
    job.model.eval()
    metrics = job.task.evaluate(job.model)
    job.model.train()
    train_loss = state.loss_sum / state.loss_count if state.loss_count else None
    state.loss_sum, state.loss_count = 0.0, 0
    state.curve.append({
        "step": state.step, "samples": state.step * job.recipe.batch_size, "flops": state.flops,
        **({"teacher_flops": state.teacher_flops} if state.teacher_flops else {}),
        "phase": phase, "train_loss": train_loss, **metrics, "time": round(state.wall, 3),
    })


def train(job: TrainJob) -> TrainResult:
    """Run ``job`` to its end (or divergence); resume from ``job.state_path`` if it exists."""
    params = trainable_parameters(job.model, job.phases)
    optimizer = make_optimizer(params, job.recipe)
    schedule = make_schedule(optimizer, job.recipe, job.total_steps)
    state = _State()
    cotrainers = _cotrainers(job)
    resumed = _load_state(job, state, params, optimizer, schedule, cotrainers)
    resumed_step = state.step if resumed else None

    ends = list(accumulate(job.steps))  # phase i covers steps [ends[i-1], ends[i])
    scheduled = not (job.recipe.schedule == "constant" and job.recipe.warmup == 0)  # a constant lr needs no step
    eval_at = set(job.eval_at)
    restrict = [None if ph.params is None else {id(p) for p in ph.params} for ph in job.phases]
    device = next(job.model.parameters()).device
    generator = step_generator(device)
    amp = autocast_for(job, device)
    if job.compile:
        job.model.compile()
    job.model.train()
    if not resumed and 0 in eval_at:
        _record(job, state, job.phases[0].name if job.phases else "")

    last_save = started = time.monotonic()
    wall_before = state.wall
    diverged_at = None
    mid_step = False
    try:
        while state.step < job.total_steps:
            i = bisect_right(ends, state.step)
            phase = job.phases[i]
            mid_step = True  # until the step is counted and recorded, a saved state would be inconsistent
            generator.manual_seed(seed_for_step(job.stream_seed, state.step))
            batch = job.task.train_batch(generator, job.recipe.batch_size)
            if job.clock is not None:
                job.clock.step = state.step
                job.clock.phase_step = state.step - (ends[i - 1] if i else 0)
                job.clock.phase_steps = job.steps[i]
            with amp:
                loss = phase.loss(batch)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                diverged_at = state.step
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if restrict[i] is not None:
                for p in params:
                    if id(p) not in restrict[i]:
                        p.grad = None
            if job.recipe.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], job.recipe.grad_clip)
            optimizer.step()
            if scheduled:
                schedule.step()
            if cotrainers[i] is not None:
                state.teacher_flops += cotrainers[i].step(state.step, batch, amp)
            state.step += 1
            state.flops += job.step_flops[i]
            state.loss_sum += loss_value
            state.loss_count += 1
            if job.after_step is not None:
                job.after_step(state.step)
            now = time.monotonic()
            state.wall = wall_before + (now - started)
            if state.step in eval_at:
                _record(job, state, phase.name)
            if job.progress is not None and (state.step % 64 == 0 or state.step == job.total_steps):
                job.progress(state.step, job.total_steps)
            if job.state_path is not None and now - last_save > job.save_every_s and state.step < job.total_steps:
                _save_state(job, state, params, optimizer, schedule, cotrainers)
                last_save = now
            mid_step = False
            if _stop.is_set() and job.state_path is not None and state.step < job.total_steps:
                _save_state(job, state, params, optimizer, schedule, cotrainers)
                raise StopRequested(f"stopped at step {state.step} of {job.total_steps}; state saved")
    except KeyboardInterrupt:
        # saved only between steps: a half-done step (parameters updated, step not counted)
        # would resume onto another curve; the last periodic save stands instead
        if job.state_path is not None and not mid_step:
            _save_state(job, state, params, optimizer, schedule, cotrainers)
        raise

    state.wall = wall_before + (time.monotonic() - started)
    if diverged_at is not None:
        state.curve.append({"step": state.step, "samples": state.step * job.recipe.batch_size,
                            "flops": state.flops, "phase": job.phases[bisect_right(ends, state.step)].name,
                            "train_loss": float("nan"), "time": round(state.wall, 3)})
    phase_flops = {}
    for ph, cost, n in zip(job.phases, job.step_flops, job.steps):
        phase_flops[ph.name] = phase_flops.get(ph.name, 0) + cost * n
    return TrainResult(curve=state.curve, status="diverged" if diverged_at is not None else "finished",
                       steps=state.step, flops=state.flops, wall_time=state.wall, diverged_at=diverged_at,
                       phase_flops=phase_flops, resumed_from=resumed_step, teacher_flops=state.teacher_flops)
