"""Progressive distillation (Panigrahi et al. 2024; Pro-KD 2021): the student follows
a sequence of the teacher's intermediate training checkpoints, then the final teacher.

Which checkpoints:
  ``checkpoints: all``     every ``every`` teacher steps (default: the task's cadence)
  ``checkpoints: [s, ...]`` an explicit list of teacher steps
  ``checkpoints: 2-shot``   one intermediate checkpoint (``intermediate``) then the final teacher

When the student moves on:
  ``switch: proportional``  student step t reads the first checkpoint at or after
                            ``t * multiplier`` teacher steps (the public code's schedule)
  ``switch: fixed``         ``steps_per_checkpoint`` student steps on each checkpoint
After the last checkpoint the student distils from the final teacher for the
rest of the budget. The loss is one-shot's (temperature, label mixing).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal, Optional, Union

from pydantic import Field, model_validator

from ..api import Method, Params, Recipe
from ..hookspecs import hookimpl
from ..losses import distill_phase, final_teacher_phase


class ProgressiveParams(Params):
    checkpoints: Union[Literal["all", "2-shot"], list[int]] = Field(
        "all", description="which teacher checkpoints: all (every `every` steps), 2-shot (one, at `intermediate`), "
                           "or a list of teacher steps")
    every: Optional[int] = Field(None, ge=1, description="cadence for `all` (default: the teacher recipe's)")
    intermediate: Optional[int] = Field(None, ge=1, description="teacher step of the 2-shot checkpoint")
    switch: Literal["proportional", "fixed"] = Field(
        "proportional", description="when the student moves to the next checkpoint: student step t reads the "
                                    "first checkpoint at or after t * multiplier, or steps_per_checkpoint each")
    multiplier: float = Field(1.0, gt=0, description="teacher steps per student step (proportional)")
    steps_per_checkpoint: Optional[int] = Field(None, ge=1, description="student steps per checkpoint (fixed)")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of teacher and student")
    label_weight: float = Field(0.0, ge=0, le=1, description="weight of the true-label cross-entropy")

    @model_validator(mode="after")
    def _consistent(self):
        if self.checkpoints == "2-shot" and self.intermediate is None:
            raise ValueError("checkpoints: 2-shot needs intermediate (the teacher step of its checkpoint)")
        if self.switch == "fixed" and self.steps_per_checkpoint is None:
            raise ValueError("switch: fixed needs steps_per_checkpoint")
        if isinstance(self.checkpoints, list) and (not self.checkpoints or min(self.checkpoints) < 1):
            raise ValueError("an explicit checkpoint list needs teacher steps >= 1")
        return self


def checkpoint_schedule(params: ProgressiveParams, recipe: Recipe) -> list[int]:
    """Teacher steps (before the final step) whose checkpoints the student reads, in order."""
    if params.checkpoints == "2-shot":
        steps = [params.intermediate]
    elif params.checkpoints == "all":
        every = params.every or recipe.checkpoint_every
        if not every:
            raise ValueError("checkpoints: all needs `every` or a teacher recipe with checkpoint_every > 0")
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


class Progressive(Method):
    """Distil from the teacher's intermediate checkpoints in order, then the final teacher."""

    name = "progressive"
    version = "1"
    Params = ProgressiveParams
    description = "follow the teacher's checkpoints, then the final teacher (Panigrahi et al. 2024)"

    def checkpoints(self, params, recipe):
        return checkpoint_schedule(params, recipe)

    def phases(self, ctx, params):
        schedule = checkpoint_schedule(params, ctx.teacher_recipe)
        student, teacher = ctx.student, ctx.teacher
        phases, previous_end = [], 0
        for step in schedule:
            if params.switch == "fixed":
                n = params.steps_per_checkpoint
            else:  # student steps t with t * multiplier <= step, after the previous checkpoint's
                end = math.floor(step / params.multiplier)
                n, previous_end = end - previous_end, end
            phases.append(distill_phase(f"checkpoint-{step}", student, partial(teacher.at, step),
                                        params.temperature, params.label_weight, steps=n, teacher=f"step {step}",
                                        cost_key="distill", info={"teacher_step": step}))
        phases.append(final_teacher_phase(ctx, params.temperature, params.label_weight, cost_key="distill"))
        return phases


@hookimpl
def kdbench_register_methods():
    return [Progressive]
