"""THE training loop: every model kdbench trains (teachers and students) goes through :func:`train`.

A :class:`TrainJob` says what to train (a model and its planned phases: each
phase with its allotted steps and measured per-step FLOPs), how (an optimizer
recipe, a data stream) and when to evaluate. The loop samples a batch, takes
the phase's loss, steps the optimizer, charges the phase's FLOPs and records
the curve; it saves its state now and then so an interrupted job resumes
exactly where it stopped. Which phase a step is in, and phases with an ``until``
criterion that end before their allotted steps (their unused steps going to the
phases after them, :func:`end_phase_early`), are kept by a :class:`PhaseSchedule`;
the plan is changed in place to say how the steps were spent.
"""

from __future__ import annotations

import contextlib
import math
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import torch
from torch import nn

from kdbench.api import Clock, Phase, Recipe, TaskInstance
from kdbench.files import atomic_torch_save
from kdbench.run import integrity
from kdbench.run.cotrain import CoTrainer, cotrainers_for, distinct
from kdbench.run.optim import is_constant, make_optimizer, make_schedule
from kdbench.run.seed_stack import SeedStack
from kdbench.run.stop import StopRequested
from kdbench.streams import step_batch, step_generator

CurvePoint = dict


@dataclass
class PlannedPhase:
    """A phase with what it was allotted: ``steps``, the measured FLOPs of one step, and
    the measured FLOPs of one step of its co-trained model (0 without one). After training,
    ``steps`` are the steps it ran (a phase that ended early gave some to later ones)."""

    phase: Phase
    steps: int
    step_flops: int
    cotrain_flops: int = 0


def _never() -> bool:
    return False


@dataclass
class TrainJob:
    """What the engine trains, for how long, and what it records.

    ``on_step(clock)`` is called after every step (``clock.step`` steps done):
    progress bars and teacher checkpoints hang there; ``on_record(point)`` after
    every curve point is recorded (the run's loggers). ``should_stop()`` is asked
    at every step boundary; when it answers True the engine saves its state and
    raises :class:`kdbench.run.stop.StopRequested`. ``precision="bf16"`` autocasts
    the losses on CUDA; ``compile`` torch.compiles the model (after its FLOPs
    were measured).
    """

    model: nn.Module
    plan: list[PlannedPhase]
    recipe: Recipe
    task: TaskInstance
    stream_seed: int  # the batch of step t is drawn from seed_for_step(stream_seed, t)
    eval_at: list[int]  # steps after which the model is evaluated (0: before training)
    clock: Clock = field(default_factory=Clock)
    state_path: Optional[Path] = None
    save_every_s: float = 60.0
    on_step: Optional[Callable[[Clock], None]] = None
    on_record: Optional[Callable[[CurvePoint], None]] = None
    should_stop: Callable[[], bool] = _never
    precision: str = "fp32"
    compile: bool = False
    # metrics of the model against its teacher, added to every curve point (kdbench.run.fidelity)
    fidelity: Optional[Callable[[nn.Module], dict[str, float]]] = None

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.plan)


def check_early_endings(plan: list[PlannedPhase]) -> None:
    """Raise ValueError unless every phase that may end early (``Phase.until``) costs per step
    what each phase that could take its unused steps costs (later phases that set ``steps``,
    and the last phase), so that moving steps moves no FLOPs."""
    for i, planned in enumerate(plan[:-1]):
        if planned.phase.until is None:
            continue
        cost = planned.step_flops + planned.cotrain_flops
        for later in plan[i + 1:]:
            if (later.phase.steps is not None or later is plan[-1]) and later.step_flops + later.cotrain_flops != cost:
                raise ValueError(f"phase {planned.phase.name!r} may end early (until) but costs {cost} FLOPs a step, "
                                 f"and phase {later.phase.name!r}, which would take its unused steps, costs "
                                 f"{later.step_flops + later.cotrain_flops}; give them one cost_key")


def end_phase_early(plan: list[PlannedPhase], i: int, done: int) -> None:
    """Phase ``i`` ends after ``done`` of its steps: its unused steps go to the phases after it
    as :func:`kdbench.run.budget.allot_steps` would have given them had phase ``i`` asked for
    ``done``: each phase that sets ``steps`` gets up to what it asked for, the last one the rest."""
    spare, plan[i].steps = plan[i].steps - done, done
    for later in plan[i + 1:-1]:
        if later.phase.steps is not None:
            take = min(spare, max(0, later.phase.steps - later.steps))
            later.steps, spare = later.steps + take, spare - take
    plan[-1].steps += spare


def progress_every(progress: Optional[Callable[[int, int], None]], every: int = 64,
                   every_s: float = 5.0) -> Callable[[Clock], None]:
    """An engine ``on_step`` that reports ``(steps done, total)`` every hundredth of the steps (at most
    every ``every`` steps), when ``every_s`` seconds passed since the last report, and at the end: often
    enough for a line every tenth of a job and every minute (:class:`kdbench.progress.Reporter`)."""
    last = [time.monotonic()]

    def on_step(clock: Clock) -> None:
        if progress is None:
            return
        now, step, total = time.monotonic(), clock.step, clock.total_steps
        if step % max(1, min(every, total // 100)) == 0 or step == total or now - last[0] >= every_s:
            last[0] = now
            progress(step, total)

    return on_step


def progress_recorder(progress, metric: Optional[str]) -> Optional[Callable[[CurvePoint], None]]:
    """An engine ``on_record`` passing each curve point and the task's ``metric`` to ``progress.record``
    (a :class:`kdbench.progress.JobProgress`); None for a progress callback without one."""
    record = getattr(progress, "record", None)
    return None if record is None else (lambda point: record(point, metric))


def chain(*hooks: Optional[Callable]) -> Optional[Callable]:
    """One hook calling each of ``hooks`` that is not None, in order (None if none is)."""
    hooks = [h for h in hooks if h is not None]
    if len(hooks) < 2:
        return hooks[0] if hooks else None

    def chained(*args) -> None:
        for hook in hooks:
            hook(*args)

    return chained


@dataclass
class TrainResult:
    """The outcome of a job: its curve and how it ended."""

    curve: list[CurvePoint]
    status: str  # "finished" or "diverged"
    steps: int
    flops: int
    wall_time: float
    diverged_at: Optional[int] = None
    resumed_from: Optional[int] = None  # the step a saved state resumed from
    teacher_flops: int = 0  # FLOPs spent co-training a teacher inside this job
    optimizer_kernel: str = "foreach"  # the update that ran: "fused" or "foreach" (kdbench.run.optim)


def trainable_parameters(model: nn.Module, phases: list[Phase]) -> list[nn.Parameter]:
    """The model's parameters, then any extra ones a phase trains (e.g. a regressor), once each."""
    seen, params = set(), []
    for p in [*model.parameters(), *(p for ph in phases for p in (ph.params or []))]:
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            params.append(p)
    return params


@contextlib.contextmanager
def training_only(params: list[nn.Parameter], trained: Optional[list[nn.Parameter]]) -> Iterator[None]:
    """Within the block only ``trained`` (None: all) of ``params`` require gradients, so a phase's
    backward computes what it trains and nothing else; the flags are restored afterwards."""
    keep = None if trained is None else {id(p) for p in trained}
    before = [p.requires_grad for p in params]
    try:
        for p, flag in zip(params, before):
            p.requires_grad_(flag and (keep is None or id(p) in keep))
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


def clip_gradients(params: list[nn.Parameter], max_norm: float) -> None:
    """Clip the gradients of those of ``params`` that have one to a total norm of ``max_norm``."""
    torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)


def autocast_for(precision: str, device: torch.device):
    """The context a loss runs in: bf16 autocast when asked for on CUDA, else nothing."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class PhaseSchedule:
    """Which phase of a job's plan each step is in, as phases end early.

    Phase ``i`` covers steps ``[ends[i-1], ends[i])``; ``end`` is where the current phase
    ends (0 before the first). Entering a phase leaves only its parameters trainable
    (:func:`training_only`, undone when the ``with`` block ends) and sets the clock's
    ``step``, ``phase_step`` and ``phase_steps`` (the loop advances the first two after each
    step). A phase other than the last whose ``until`` answers
    True after one of its steps, its last excepted, ends there: its unused steps go to the
    phases after it (:func:`end_phase_early`), the boundaries move, and the steps to
    evaluate after gain the new ones (so every boundary, planned or moved, has a curve point).
    """

    def __init__(self, plan: list[PlannedPhase], params: list[nn.Parameter], clock: Clock,
                 trained: Callable[[Phase], Optional[list]] = lambda phase: phase.params):
        check_early_endings(plan)
        self.plan, self.params, self.clock, self.trained = plan, params, clock, trained
        self.ends: list[int] = []
        self.eval_at: set[int] = set()
        self.i, self.end = -1, 0
        self.current: Optional[Phase] = None
        self._mask = contextlib.ExitStack()

    def begin(self, eval_at: list[int], saved: Iterable[int] = ()) -> set[int]:
        """Fix the boundaries from the plan as it stands (as a resumed job's state restored it);
        return the steps to evaluate after: ``eval_at``, and every boundary if a phase may end early,
        with ``saved``, those a resumed job had gathered (boundaries that have moved since)."""
        self.ends = list(accumulate(p.steps for p in self.plan))
        may_end_early = any(p.phase.until is not None for p in self.plan[:-1])
        self.eval_at = set(eval_at) | (set(self.ends) if may_end_early else set()) | set(saved)
        return self.eval_at

    def enter(self, step: int) -> tuple[Phase, int, Optional[Callable[[Clock, float], bool]]]:
        """Start the phase that ``step`` is in: ``(phase, FLOPs of one of its steps, until)``,
        ``until`` None where the phase cannot end early."""
        self.i = i = bisect_right(self.ends, step)
        planned, self.end = self.plan[i], self.ends[i]
        self._mask.close()
        self._mask.enter_context(training_only(self.params, self.trained(planned.phase)))
        self.clock.step, self.clock.phase_steps = step, planned.steps
        self.clock.phase_step = step - (self.end - planned.steps)
        self.current = planned.phase
        return planned.phase, planned.step_flops, planned.phase.until if i < len(self.plan) - 1 else None

    def ask_until(self, step: int, loss: float) -> None:
        """After ``step`` steps (the clock counting the last one), whose last had ``loss``: end the
        current phase here if it may and its ``until`` says so."""
        if step < self.end and self.current.until(self.clock, loss):
            end_phase_early(self.plan, self.i, self.clock.phase_step)
            self.ends = list(accumulate(p.steps for p in self.plan))
            self.end = self.ends[self.i]
            self.eval_at.update(self.ends)

    def __enter__(self) -> "PhaseSchedule":
        return self

    def __exit__(self, *exc) -> None:
        self._mask.close()  # every parameter's requires_grad as it was before the job


@dataclass
class LoopState:
    """What the loop carries from step to step; saved with the models for resumption."""

    step: int = 0
    flops: int = 0
    teacher_flops: int = 0
    wall: float = 0.0
    loss_sum: float = 0.0
    loss_count: int = 0
    curve: list[CurvePoint] = field(default_factory=list)


class Checkpoint:
    """Saves and restores everything a job (or a stack of seeds' jobs) needs to resume bit for bit
    at a step boundary. A single job's state keeps the layout of every earlier kdbench; a stack's
    adds each seed's loop state under ``members`` with the run ids it belongs to."""

    def __init__(self, jobs: list[TrainJob], trainee, optimizer, schedule, cotrainers: list[CoTrainer],
                 phases: PhaseSchedule, state_path: Optional[Path]):
        self.jobs, self.job, self.trainee = jobs, jobs[0], trainee
        self.params, self.optimizer, self.schedule = trainee.params, optimizer, schedule
        self.cotrainers, self.phases, self.state_path = cotrainers, phases, state_path
        self.eval_at: list[int] = []  # a loaded state's steps to evaluate after (moved boundaries included)

    def save(self, states: list[LoopState], ended: list[Optional[int]]) -> None:
        loop = {k: getattr(states[0], k) for k in LoopState.__dataclass_fields__}
        stacked = len(self.jobs) > 1
        atomic_torch_save({
            **loop,
            **({"members": [{k: getattr(st, k) for k in LoopState.__dataclass_fields__} for st in states],
                "ended": ended, "member_ids": self.trainee.member_ids} if stacked else {}),
            "cotrain": [c.state_dict() for c in self.cotrainers],
            "phase_steps": [p.steps for p in self.job.plan],  # as changed by phases that ended early
            "until": [getattr(p.phase.until, "state_dict", lambda: None)() for p in self.job.plan],
            "phase_state": [p.phase.state.state_dict() if p.phase.state is not None else None
                            for p in self.job.plan],
            "eval_at": sorted(self.phases.eval_at),  # boundaries that moved before this save keep their points
            "model": self.job.model.state_dict(), "params": [p.detach().clone() for p in self.params],
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }, self.state_path)
        integrity.record(Path(self.state_path).parent, self.state_path)

    def load(self, states: list[LoopState], ended: list[Optional[int]]) -> Optional[int]:
        """Restore a saved state if there is one (a stack's only if it saved the same runs); the
        step it resumes from, else None."""
        if self.state_path is None or not Path(self.state_path).exists():
            return None
        saved = torch.load(self.state_path, map_location="cpu", weights_only=True)
        if len(self.jobs) > 1 and saved.get("member_ids") != self.trainee.member_ids:
            return None  # another group of seeds saved it: start afresh
        self.job.model.load_state_dict(saved["model"])
        with torch.no_grad():
            for p, value in zip(self.params, saved["params"]):
                p.copy_(value)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["rng"])
        if saved["cuda_rng"]:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        for state, fields in zip(states, saved.get("members", [saved])):
            for key in LoopState.__dataclass_fields__:
                setattr(state, key, fields[key])
        ended[:] = saved.get("ended", ended)
        for c, c_saved in zip(self.cotrainers, saved["cotrain"]):
            c.load_state_dict(c_saved)
        self.eval_at = saved.get("eval_at", [])  # absent from states saved before kdbench 0.2
        plan = self.job.plan  # a state saved before phases could end early has neither list
        for planned, steps, until in zip(plan, saved.get("phase_steps", [p.steps for p in plan]),
                                         saved.get("until", [None] * len(plan))):
            planned.steps = steps
            if until is not None:
                planned.phase.until.load_state_dict(until)
        for planned, phase_state in zip(plan, saved.get("phase_state", [None] * len(plan))):
            if phase_state is not None:  # absent from states saved before kdbench 0.3
                planned.phase.state.load_state_dict(phase_state)
        return max(st.step for st in states)

    def stop_if_asked(self, states: list[LoopState], ended: list[Optional[int]]) -> None:
        """Between steps: if ``job.should_stop()`` answers True, save and raise StopRequested."""
        if self.job.should_stop():
            self.save(states, ended)
            step = max(st.step for st in states)
            raise StopRequested(f"stopped at step {step} of {self.job.total_steps}; state saved")

    def interrupted(self, states: list[LoopState], ended: list[Optional[int]], mid_step: bool) -> None:
        """On KeyboardInterrupt: save, but only between steps. A half-done step (parameters updated,
        step not counted) would resume onto another curve; the last periodic save stands instead."""
        if self.state_path is not None and not mid_step:
            self.save(states, ended)


def record(job: TrainJob, state: LoopState, phase: str) -> None:
    """Evaluate the model (eval mode, no gradients), append a curve point and pass it to ``job.on_record``."""
    job.model.eval()
    with torch.no_grad():
        metrics = job.task.evaluate(job.model)
        if job.fidelity is not None:
            metrics.update(job.fidelity(job.model))
    job.model.train()
    train_loss = state.loss_sum / state.loss_count if state.loss_count else None
    state.loss_sum, state.loss_count = 0.0, 0
    state.curve.append({
        "step": state.step, "samples": state.step * job.recipe.batch_size, "flops": state.flops,
        **({"teacher_flops": state.teacher_flops} if state.teacher_flops else {}),
        "phase": phase, "train_loss": train_loss, **metrics, "time": round(state.wall, 3),
    })
    if job.on_record is not None:
        job.on_record(state.curve[-1])


class _OneModel:
    """What the loop trains for a single job: the model's parameters (and any a phase adds)."""

    def __init__(self, job: TrainJob):
        self.job = job
        self.params = trainable_parameters(job.model, [p.phase for p in job.plan])
        self.member_ids = None

    def trained(self, phase: Phase) -> Optional[list[nn.Parameter]]:
        return phase.params

    def batch(self, generator: torch.Generator, step: int):
        return step_batch(self.job.task, generator, self.job.stream_seed, step, self.job.recipe.batch_size)

    def losses(self, i: int, phase: Phase, batch) -> torch.Tensor:
        return phase.loss(batch)

    @staticmethod
    def values(loss: torch.Tensor) -> list[float]:
        return [loss.item()]

    def backward(self, loss: torch.Tensor, active: list[bool]) -> None:
        loss.backward()

    def clip(self, max_norm: float) -> None:
        clip_gradients(self.params, max_norm)

    def model(self, k: int) -> nn.Module:
        return self.job.model


class _Stacked:
    """What the loop trains for the seeds of a :class:`kdbench.run.seed_stack.SeedStack`: its
    stacked parameters, every seed's batch from its own stream, every seed's loss at once."""

    def __init__(self, jobs: list[TrainJob], stack: SeedStack, member_ids: list[str]):
        self.jobs, self.stack, self.member_ids = jobs, stack, member_ids
        self.params = list(stack.params.values())
        self.stream_seeds = [j.stream_seed for j in jobs]

    def trained(self, phase: Phase) -> Optional[list[torch.Tensor]]:
        return self.stack.trained(phase)

    def batch(self, generator: torch.Generator, step: int):
        return self.stack.draw(self.jobs[0].task, generator, self.stream_seeds, step, self.jobs[0].recipe.batch_size)

    def losses(self, i: int, phase: Phase, batch) -> torch.Tensor:
        return self.stack.losses(i, batch)

    @staticmethod
    def values(loss: torch.Tensor) -> list[float]:
        return loss.tolist()

    def backward(self, loss: torch.Tensor, active: list[bool]) -> None:
        loss[torch.tensor(active)].sum().backward()
        for k, on in enumerate(active):
            if not on:
                self.stack.freeze(k)

    def clip(self, max_norm: float) -> None:
        self.stack.clip(max_norm)

    def model(self, k: int) -> nn.Module:
        return self.stack.unstack(k)


def _setup(jobs: list[TrainJob], trainee, state_path: Optional[Path]):
    """The optimizer, learning-rate schedule, co-trainers (one per phase, None where a phase has
    none), phase schedule and checkpoint of a job (or a stack of seeds' jobs), in the order train needs."""
    job = jobs[0]
    optimizer = make_optimizer(trainee.params, job.recipe)
    schedule = make_schedule(optimizer, job.recipe, job.total_steps)
    cotrainers = cotrainers_for([p.phase.cotrain for p in job.plan], [p.cotrain_flops for p in job.plan])
    # checks early endings before anything is loaded
    phases = PhaseSchedule(job.plan, trainee.params, job.clock, trainee.trained)
    return optimizer, schedule, cotrainers, phases, Checkpoint(jobs, trainee, optimizer, schedule,
                                                                distinct(cotrainers), phases, state_path)


def _start(jobs: list[TrainJob], states: list[LoopState], resumed_from: Optional[int], eval_at: set[int]):
    """Ready the models for the first step (compiled if asked, in train mode; a fresh job's point
    at step 0 recorded); the step generator and loss context."""
    job = jobs[0]
    device = next(job.model.parameters()).device
    generator, amp = step_generator(device), autocast_for(job.precision, device)
    for member, state in zip(jobs, states):
        if member.compile:
            member.model.compile()
        member.model.train()
        if resumed_from is None and 0 in eval_at:
            record(member, state, job.plan[0].phase.name if job.plan else "")
    job.clock.total_steps = job.total_steps
    return generator, amp


def _result(job: TrainJob, state: LoopState, resumed_from: Optional[int], diverged_at: Optional[int],
            phase: Optional[str], kernel: str) -> TrainResult:
    """The job's result; a diverged job's curve ends with a point whose ``train_loss`` is NaN."""
    if diverged_at is not None:
        state.curve.append({"step": state.step, "samples": state.step * job.recipe.batch_size,
                            "flops": state.flops, "phase": phase,
                            "train_loss": float("nan"), "time": round(state.wall, 3)})
    return TrainResult(curve=state.curve, status="diverged" if diverged_at is not None else "finished",
                       steps=state.step, flops=state.flops, wall_time=state.wall, diverged_at=diverged_at,
                       resumed_from=resumed_from, teacher_flops=state.teacher_flops, optimizer_kernel=kernel)


def train(job: TrainJob) -> TrainResult:
    """Run ``job`` to its end (or divergence); resume from ``job.state_path`` if it exists."""
    return _train([job], _OneModel(job), job.state_path)[0]


def train_stacked(jobs: list[TrainJob], stack: SeedStack, member_ids: list[str],
                  state_path: Optional[Path]) -> list[TrainResult]:
    """Run the jobs of one group of seeds (same plan, same recipe: see :mod:`kdbench.run.seed_stack`)
    as one stacked model; each job's result as its own run would give it. A seed whose loss is not
    finite ends there (diverged) and the others go on. Resumes from ``state_path`` if it holds the
    state of the same runs (``member_ids``)."""
    return _train(jobs, _Stacked(jobs, stack, member_ids), state_path)


def _train(jobs: list[TrainJob], trainee, state_path: Optional[Path]) -> list[TrainResult]:
    """THE loop, for one job or for a stack of seeds' jobs (``trainee`` says which)."""
    job = jobs[0]
    optimizer, schedule, cotrainers, phases, checkpoint = _setup(jobs, trainee, state_path)
    states = [LoopState() for _ in jobs]
    ended: list[Optional[int]] = [None] * len(jobs)  # the step each seed diverged at
    resumed_from = checkpoint.load(states, ended)
    eval_at = phases.begin(job.eval_at, checkpoint.eval_at)  # phases ending early add their moved boundaries
    generator, amp = _start(jobs, states, resumed_from, eval_at)
    clock, total, clip, scheduled = job.clock, job.total_steps, job.recipe.grad_clip, not is_constant(job.recipe)
    save_until = total if state_path is not None else 0  # without a path no saves and no stop requests
    started = last_save = time.monotonic()
    walls_before, mid_step, step = [st.wall for st in states], False, max(st.step for st in states)
    phase_at_end: list[Optional[str]] = [None] * len(jobs)
    active = [e is None for e in ended]  # the seeds still training (derived from ended, once a step)
    with phases:
        try:
            while step < total and any(active):
                if step >= phases.end:  # a new phase: its parameters, clock fields and costs, once
                    phase, step_flops, until = phases.enter(step)
                    cotrainer = cotrainers[phases.i]
                mid_step = True  # until the step is counted and recorded, a saved state would be inconsistent
                batch = trainee.batch(generator, step)
                with amp:
                    loss = trainee.losses(phases.i, phase, batch)
                values = trainee.values(loss)
                for k, value in enumerate(values):
                    if ended[k] is None and not math.isfinite(value):
                        ended[k], phase_at_end[k] = step, phase.name
                active = [e is None for e in ended]
                if not any(active):
                    break
                optimizer.zero_grad(set_to_none=True)
                trainee.backward(loss, active)
                if clip > 0:
                    trainee.clip(clip)
                optimizer.step()
                if scheduled:
                    schedule.step()
                step += 1
                for k, state in enumerate(states):
                    if active[k]:
                        if cotrainer is not None:
                            state.teacher_flops += cotrainer.step(step - 1, batch, amp)
                        state.step, state.flops = step, state.flops + step_flops
                        state.loss_sum, state.loss_count = state.loss_sum + values[k], state.loss_count + 1
                clock.step, clock.phase_step = step, clock.phase_step + 1
                if until is not None:
                    phases.ask_until(step, values[0])
                now = time.monotonic()
                for k, member in enumerate(jobs):
                    if not active[k]:
                        continue
                    if member.on_step is not None:
                        member.on_step(clock)
                    states[k].wall = walls_before[k] + (now - started)
                    if step in eval_at:
                        trainee.model(k)  # its own model now holds its weights
                        record(member, states[k], phase.name)
                if step < save_until and now - last_save > job.save_every_s:
                    checkpoint.save(states, ended)
                    last_save = now
                mid_step = False
                if step < save_until:
                    checkpoint.stop_if_asked(states, ended)
        except KeyboardInterrupt:
            checkpoint.interrupted(states, ended, mid_step)
            raise
    end = time.monotonic()
    kernel = "fused" if optimizer.param_groups[0].get("fused") else "foreach"  # a resumed state's, if loaded
    results = []
    for k, member in enumerate(jobs):
        if ended[k] is None or len(jobs) == 1:
            states[k].wall = walls_before[k] + (end - started)
        trainee.model(k)  # the trained weights in the job's own model
        results.append(_result(member, states[k], resumed_from, ended[k], phase_at_end[k], kernel))
    return results
