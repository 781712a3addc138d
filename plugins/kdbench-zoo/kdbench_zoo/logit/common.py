"""What the zoo's logit methods share: the teacher's and student's logits of a batch, the class count
of a task, label mixing, and the refusal of a task a method cannot apply to. Public kdbench names only.

Every method here works on the logits ``kdbench.logits(model, batch)`` gives: one row per example
for classification, one row per masked position for MLM tasks (so a "sample" of a batch-relation
loss such as DIST's is a masked position there, and its classes are the vocabulary).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import BasicDistillOptions, Batch, MethodContext, Params, Phase, UserError, logits


class CEWeight(Params):
    """``ce_weight``: the weight of the true-label cross-entropy added to a method's distillation terms
    (the papers' ``L = ce_weight * CE + ...``, not a convex mix)."""

    ce_weight: float = Field(1.0, ge=0, description="weight of the true-label cross-entropy added to the loss")


def logit_pair(student: torch.nn.Module, teacher: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(student logits, teacher logits)`` of ``batch`` in float32, the teacher's without gradient."""
    with torch.no_grad():
        target = logits(teacher, batch).float()
    return logits(student, batch).float(), target


def num_classes(ctx: MethodContext) -> int:
    """The number of classes the task's models score (the vocabulary for MLM), read from the
    student's logits on a 2-example batch drawn from a fresh generator (the run's streams are untouched)."""
    generator = torch.Generator(device=ctx.device).manual_seed(0)
    with torch.no_grad():
        return int(logits(ctx.student, ctx.task.train_batch(generator, 2)).shape[-1])


def require_classes(ctx: MethodContext, method: str, minimum: int, reason: str) -> int:
    """The task's class count; a :class:`kdbench.UserError` naming ``method``, the task's student model and
    ``reason`` when it has fewer than ``minimum`` (``kdbench validate`` turns it into exit 2)."""
    classes = num_classes(ctx)
    if classes < minimum:
        raise UserError(f"{method}: needs at least {minimum} classes ({reason}); this task's student "
                        f"({type(ctx.student).__name__}) scores {classes}: use a task with more classes "
                        f"(parity-mlp or parity-transformer with levels >= 2, an MLM task)")
    return classes


def with_labels(divergence: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor,
                label_weight: float) -> torch.Tensor:
    """``(1 - label_weight) * divergence + label_weight * cross_entropy``: kdbench's one-shot mixing."""
    if label_weight > 0:
        return (1 - label_weight) * divergence + label_weight * F.cross_entropy(student_logits, labels)
    return divergence


def divergence_phase(ctx: MethodContext, name: str, options: BasicDistillOptions,
                     divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **fields) -> Phase:
    """One phase distilling the final teacher with ``divergence(student_logits, teacher_logits)`` (both
    already divided by the temperature; a scalar, the mean over rows) times T^2, mixed with the labels by
    ``options.label_weight``."""
    student, teacher, t = ctx.student, ctx.teacher.final(), options.temperature

    def loss(batch: Batch) -> torch.Tensor:
        s, target = logit_pair(student, teacher, batch)
        return with_labels(divergence(s / t, target / t) * (t * t), s, batch.labels, options.label_weight)

    return Phase(name, loss=loss, teacher="final", **fields)
