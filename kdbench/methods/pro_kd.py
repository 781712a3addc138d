"""Pro-KD (Rezagholizadeh et al. 2021, "Pro-KD: Progressive Distillation by Following
the Footsteps of the Teacher"): the student follows the teacher's training
trajectory with a temperature schedule, then distils from the final teacher.

The trajectory is followed as in ``online``: the teacher trains in lockstep by its
task's recipe and the student reads a frozen copy refreshed every ``refresh``
teacher steps. The paper's exact schedule is not fixed here; the defaults are
kdbench's choice: the temperature goes from ``temperature_start`` (4.0: soft,
easy targets while the teacher is young) to ``temperature_end`` (1.0) over the
trajectory phase, ``linear`` in its steps (``cosine`` and ``exponential`` are
the other shapes), and the final phase uses ``temperature_end``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from kdbench.api import logits
from kdbench.distill_options import BasicDistillOptions
from kdbench.distill_options import interpolate as temperature_at  # the schedule's temperature after a phase fraction
from kdbench.hookspecs import hookimpl
from kdbench.losses import distillation_loss
from kdbench.methods.lockstep import LockstepMethod, LockstepParams


class ProKDParams(LockstepParams):
    """The lockstep cadence, the label weight, and the temperature schedule over the trajectory phase."""

    temperature_start: float = Field(4.0, gt=0, description="temperature at the start of the trajectory phase")
    temperature_end: float = Field(1.0, gt=0, description="temperature at its end, and in the final phase")
    shape: Literal["linear", "cosine", "exponential"] = Field(
        "linear", description="how the temperature goes from start to end over the trajectory phase")

    def final_options(self) -> BasicDistillOptions:
        """The final teacher's loss: at ``temperature_end``."""
        return BasicDistillOptions(temperature=self.temperature_end, label_weight=self.label_weight)


class ProKD(LockstepMethod):
    """Follow the co-trained teacher with an annealed temperature, then the final teacher."""

    name = "pro-kd"
    version = "1"
    Params = ProKDParams
    description = "follow the teacher's trajectory with a temperature schedule (Rezagholizadeh et al. 2021)"
    follow_phase = "trajectory"

    def follow(self, ctx, params, target):
        """Distil from the co-trained teacher's frozen copy at the schedule's temperature for the phase's fraction."""
        student, clock = ctx.student, ctx.clock

        def loss(batch):
            t = temperature_at(clock.phase_fraction, params.temperature_start, params.temperature_end, params.shape)
            with torch.no_grad():
                teacher_logits = logits(target, batch)
            return distillation_loss(logits(student, batch), teacher_logits, batch.labels, t, params.label_weight)

        return loss


@hookimpl
def kdbench_register_methods():
    return [ProKD]
