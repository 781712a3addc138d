"""One-shot distillation (Hinton et al. 2015): match the final teacher's outputs."""

import torch
from pydantic import Field

from ..api import Method, Params, Phase, logits
from ..hookspecs import hookimpl
from ..losses import distillation_loss


class OneShotParams(Params):
    temperature: float = Field(1.0, gt=0, description="softmax temperature of teacher and student")
    label_weight: float = Field(0.0, ge=0, le=1, description="weight of the true-label cross-entropy")


def distill_phase(name: str, student, teacher_fn, temperature: float, label_weight: float, **kw) -> Phase:
    """A phase matching the logits of ``teacher_fn()`` (called each step, so checkpoints load lazily)."""

    def loss(batch):
        with torch.no_grad():
            target = logits(teacher_fn(), batch)
        return distillation_loss(logits(student, batch), target, batch.labels, temperature, label_weight)

    return Phase(name, loss=loss, **kw)


def final_teacher_phase(ctx, temperature: float, label_weight: float, name: str = "final-teacher", **kw) -> Phase:
    """A phase distilling from the final teacher's logits (also the last phase of other methods)."""
    return distill_phase(name, ctx.student, ctx.teacher.final, temperature, label_weight, teacher="final", **kw)


class OneShot(Method):
    """Soft cross-entropy (KL) to the final teacher at a temperature, optionally mixed with labels."""

    name = "one-shot"
    version = "1"
    Params = OneShotParams
    description = "distil from the final teacher only (Hinton et al. 2015)"

    def phases(self, ctx, params):
        return [final_teacher_phase(ctx, params.temperature, params.label_weight)]


@hookimpl
def kdbench_register_methods():
    return [OneShot]
