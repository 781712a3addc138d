"""Progressive distillation (Panigrahi et al. 2024; Pro-KD 2021): the student follows
a sequence of the teacher's intermediate training checkpoints, then the final teacher.

Which checkpoints:
  ``checkpoints: all``     every ``every`` teacher steps (default: the task's cadence)
  ``checkpoints: [s, ...]`` an explicit list of teacher steps
  ``checkpoints: 2-shot``   one intermediate checkpoint (``intermediate``) then the final teacher
  ``checkpoints: levels``   tied to the teacher's own learning curve: for each of ``levels`` (values
                            of the task's metric), the first checkpoint (of those stored every
                            ``every`` steps) whose evaluation reaches it. The checkpoints are
                            evaluated when the run starts (an evaluation cost, not charged to the
                            budget); a level no checkpoint reaches is skipped, so a teacher that
                            jumps late is followed where it jumps, not on a fixed grid. The
                            summary's phases give each checkpoint's level and metric.

When the student moves on:
  ``switch: proportional``  student step t reads the first checkpoint at or after
                            ``t * multiplier`` teacher steps (the public code's schedule)
  ``switch: fixed``         ``steps_per_checkpoint`` student steps on each checkpoint
  ``switch: saturate``      when the student's training loss on the checkpoint plateaus (the
                            public code's ``progressive_till_saturate``, which watched evaluation
                            accuracy instead): the mean loss of its last ``patience`` steps is
                            lower than that of the ``patience`` steps before by at most
                            ``tolerance`` (relative; :class:`kdbench.plateau.Plateau`), and at the
                            latest after ``steps_per_checkpoint`` steps. A checkpoint's unused steps
                            go to the checkpoints after it (each up to ``steps_per_checkpoint``),
                            the rest to the final teacher. The summary's phases give the steps
                            each checkpoint ran and, where it plateaued, ``plateau_at_step``
                            (the run's step of the switch).
After the last checkpoint the student distils from the final teacher for the
rest of the budget. The loss is one-shot's: ``temperature`` (0: the teacher's
argmax), ``label_weight``, ``divergence`` (forward or reverse KL) and the
schedules ``temperature_schedule`` / ``temperature_end`` and
``label_weight_schedule`` / ``label_weight_end`` over the whole run (see
:class:`kdbench.losses.DistillOptions`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal, Optional, Union

import torch
from pydantic import Field, model_validator

from kdbench.api import Method, MethodContext, Recipe, new_param
from kdbench.distill_options import DistillOptions
from kdbench.hookspecs import hookimpl
from kdbench.losses import distill_phase, final_teacher_phase
from kdbench.plateau import Plateau


class ProgressiveParams(DistillOptions):
    checkpoints: Union[Literal["all", "2-shot", "levels"], list[int]] = Field(
        "all", description="which teacher checkpoints: all (every `every` steps), 2-shot (one, at `intermediate`), "
                           "levels (where the teacher's metric first reaches each of `levels`), or a list of "
                           "teacher steps")
    every: Optional[int] = Field(None, ge=1, description="cadence for `all`, and of the candidates for `levels` "
                                                         "(default: the teacher recipe's)")
    levels: Optional[list[float]] = new_param(None, description="levels: values of the task's metric; the student "
                                                                "reads the first checkpoint reaching each, in order")
    intermediate: Optional[int] = Field(None, ge=1, description="teacher step of the 2-shot checkpoint")
    switch: Literal["proportional", "fixed", "saturate"] = Field(
        "proportional", description="when the student moves to the next checkpoint: student step t reads the "
                                    "first checkpoint at or after t * multiplier, steps_per_checkpoint each, or "
                                    "when its training loss plateaus (saturate, at most steps_per_checkpoint)")
    multiplier: float = Field(1.0, gt=0, description="teacher steps per student step (proportional)")
    steps_per_checkpoint: Optional[int] = Field(
        None, ge=1, description="student steps per checkpoint (fixed), the most a checkpoint gets (saturate)")
    patience: int = new_param(100, ge=1, description="saturate: steps per moving-average window of the loss")
    tolerance: float = new_param(0.01, ge=0, description="saturate: switch when the loss's mean over the last "
                                                         "`patience` steps is at most this much (relative) lower "
                                                         "than over the `patience` steps before")

    @model_validator(mode="after")
    def _consistent(self):
        if (self.checkpoints == "levels") != (self.levels is not None):
            raise ValueError("checkpoints: levels and `levels` (a list of metric values) go together")
        if self.levels is not None and not self.levels:
            raise ValueError("levels: give at least one metric value")
        if self.checkpoints == "2-shot" and self.intermediate is None:
            raise ValueError("checkpoints: 2-shot needs intermediate (the teacher step of its checkpoint)")
        if self.switch in ("fixed", "saturate") and self.steps_per_checkpoint is None:
            raise ValueError(f"switch: {self.switch} needs steps_per_checkpoint")
        if isinstance(self.checkpoints, list) and (not self.checkpoints or min(self.checkpoints) < 1):
            raise ValueError("an explicit checkpoint list needs teacher steps >= 1")
        return self


def checkpoint_schedule(params: ProgressiveParams, recipe: Recipe) -> list[int]:
    """Teacher steps (before the final step) whose checkpoints the student may read, in order
    (``levels``: the candidates, every one stored; :func:`level_checkpoints` picks among them)."""
    if params.checkpoints == "2-shot":
        steps = [params.intermediate]
    elif params.checkpoints in ("all", "levels"):
        every = params.every or recipe.checkpoint_every
        if not every:
            raise ValueError(f"checkpoints: {params.checkpoints} needs `every` or a teacher recipe with "
                             "checkpoint_every > 0")
        steps = list(range(every, recipe.steps, every))
    else:
        steps = list(params.checkpoints)
    beyond = sorted(s for s in steps if s > recipe.steps)
    if beyond:
        field = "intermediate" if params.checkpoints == "2-shot" else "checkpoints"
        raise ValueError(f"{field}: teacher step(s) {beyond} are never reached: the teacher trains "
                         f"{recipe.steps} steps; allowed: 1..{recipe.steps}")
    steps = sorted({s for s in steps if s < recipe.steps})  # the last step's checkpoint is the final teacher
    if not steps:
        raise ValueError(f"no teacher checkpoint falls before the teacher's last step ({recipe.steps}); "
                         "set checkpoint_every in the task's teacher recipe, `every`, or a checkpoint list")
    return steps


@torch.no_grad()
def level_checkpoints(ctx: MethodContext, candidates: list[int], levels: list[float]) -> list[tuple[int, dict]]:
    """For each level in turn, the first candidate checkpoint (at or after the previous level's) whose
    evaluation reaches it (the task's metric, in its direction), with what its phase records; a
    checkpoint that reaches several levels is read once, under the highest."""
    task, chosen, i = ctx.task, [], 0
    reaches = (lambda v, level: v >= level) if task.higher_is_better else (lambda v, level: v <= level)
    for step in candidates:
        if i == len(levels):
            break
        value = float(task.evaluate(ctx.teacher.at(step))[task.metric])
        if reaches(value, levels[i]):
            chosen.append((step, {"level": levels[i], "teacher_metric": value}))
            i += 1
            while i < len(levels) and reaches(value, levels[i]):  # one checkpoint may pass several levels
                chosen[-1][1]["level"] = levels[i]
                i += 1
    return chosen


class Progressive(Method):
    """Distil from the teacher's intermediate checkpoints in order, then the final teacher."""

    name = "progressive"
    version = "1"
    Params = ProgressiveParams
    description = "follow the teacher's checkpoints, then the final teacher (Panigrahi et al. 2024)"

    def checkpoints(self, params, recipe):
        return checkpoint_schedule(params, recipe)

    def phases(self, ctx, params):
        steps = checkpoint_schedule(params, ctx.teacher_recipe)
        schedule = (level_checkpoints(ctx, steps, params.levels) if params.checkpoints == "levels"
                    else [(step, {}) for step in steps])
        student, teacher = ctx.student, ctx.teacher
        phases, previous_end = [], 0
        for step, chosen in schedule:
            if params.switch == "proportional":  # student steps t with t * multiplier <= step, after the previous's
                end = math.floor(step / params.multiplier)
                n, previous_end = end - previous_end, end
            else:
                n = params.steps_per_checkpoint
            info, until = {"teacher_step": step, **chosen}, None
            if params.switch == "saturate":  # the summary shows the step of a switch on a plateau
                info["max_steps"] = n
                until = Plateau(params.patience, params.tolerance, record=info)
            phases.append(distill_phase(f"checkpoint-{step}", student, partial(teacher.at, step), options=params,
                                        clock=ctx.clock, steps=n, until=until, teacher=f"step {step}",
                                        cost_key="distill", info=info))
        phases.append(final_teacher_phase(ctx, options=params, cost_key="distill"))
        return phases


@hookimpl
def kdbench_register_methods():
    return [Progressive]
