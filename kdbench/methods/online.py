"""Online distillation (Harutyunyan et al. 2023, "Supervision complexity and its role
in knowledge distillation"): the teacher trains while the student learns from it.

The teacher (initialised as the cached teacher would be) trains in lockstep on the
student's batches by its task's recipe, one teacher step every ``every`` student
steps, for the recipe's number of teacher steps. The student distils from a frozen
copy of the teacher refreshed every ``refresh`` teacher steps, so its targets grow
more complex as the teacher learns. When the teacher has finished, the student
distils from the final teacher for the rest of the budget. No checkpoints are
stored; the teacher's training FLOPs are charged to the run (``teacher_train_flops``).
"""

from __future__ import annotations

from pydantic import Field

from kdbench.api import Method, Params
from kdbench.hookspecs import hookimpl
from kdbench.losses import cotrained_teacher, distill_phase, lockstep_phases


class OnlineParams(Params):
    every: int = Field(1, ge=1, description="student steps per teacher step")
    refresh: int = Field(1, ge=1, description="teacher steps between refreshes of the student's target")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of teacher and student")
    label_weight: float = Field(0.0, ge=0, le=1, description="weight of the true-label cross-entropy")


class Online(Method):
    """Distil from a teacher that trains alongside the student, then from the final teacher."""

    name = "online"
    version = "1"
    Params = OnlineParams
    description = "distil while the teacher trains in lockstep (Harutyunyan et al. 2023)"
    needs_teacher = False  # it trains its own, inside the run

    def phases(self, ctx, params):
        cotrain = cotrained_teacher(ctx, params.every, params.refresh)
        target = cotrain.target
        follow = distill_phase("online", ctx.student, lambda: target, params.temperature, params.label_weight).loss
        return lockstep_phases(ctx, cotrain, "online", follow, params.temperature, params.label_weight)


@hookimpl
def kdbench_register_methods():
    return [Online]
