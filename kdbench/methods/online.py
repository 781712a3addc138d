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

from kdbench.distill_options import BasicDistillOptions
from kdbench.hookspecs import hookimpl
from kdbench.losses import teacher_loss
from kdbench.methods.lockstep import LockstepMethod, LockstepParams


class OnlineParams(LockstepParams, BasicDistillOptions):
    """The lockstep cadence, and the temperature and label weight of both phases."""

    def final_options(self) -> BasicDistillOptions:
        """The final teacher's loss: the same as the online phase's."""
        return self


class Online(LockstepMethod):
    """Distil from a teacher that trains alongside the student, then from the final teacher."""

    name = "online"
    version = "1"
    Params = OnlineParams
    description = "distil while the teacher trains in lockstep (Harutyunyan et al. 2023)"
    follow_phase = "online"

    def follow(self, ctx, params, target):
        """Distil from the co-trained teacher's frozen copy at the params' temperature and label weight."""
        return teacher_loss(ctx.student, lambda: target, params, ctx.clock)


@hookimpl
def kdbench_register_methods():
    return [Online]
