"""Losses and phases shared by distillation methods (public: a method plugin may use them)."""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .api import CoTrain, MethodContext, Phase, logits


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """Hinton et al.'s distillation loss: KL(teacher || student) at ``temperature``, times T^2.

    Same gradients as the soft cross-entropy; zero when the student matches. The
    T^2 factor keeps gradient size comparable across temperatures.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * (t * t)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float = 1.0, label_weight: float = 0.0) -> torch.Tensor:
    """``(1 - label_weight) * soft_cross_entropy + label_weight * cross_entropy(labels)``."""
    loss = soft_cross_entropy(student_logits, teacher_logits, temperature)
    if label_weight > 0:
        loss = (1 - label_weight) * loss + label_weight * F.cross_entropy(student_logits.float(), labels)
    return loss


def distill_phase(name: str, student: nn.Module, teacher_fn: Callable[[], nn.Module], temperature: float = 1.0,
                  label_weight: float = 0.0, **phase_fields) -> Phase:
    """A :class:`Phase` in which ``student`` matches the logits of ``teacher_fn()`` with
    :func:`distillation_loss`. ``teacher_fn`` is called at every step, so a checkpoint loads
    only when its phase runs. ``phase_fields`` are the Phase's other fields (share, steps, ...)."""

    def loss(batch):
        with torch.no_grad():
            target = logits(teacher_fn(), batch)
        return distillation_loss(logits(student, batch), target, batch.labels, temperature, label_weight)

    return Phase(name, loss=loss, **phase_fields)


def final_teacher_phase(ctx: MethodContext, temperature: float = 1.0, label_weight: float = 0.0,
                        name: str = "final-teacher", **phase_fields) -> Phase:
    """A phase distilling ``ctx.student`` from the final teacher's logits: one-shot distillation,
    and the last phase of most other methods."""
    return distill_phase(name, ctx.student, ctx.teacher.final, temperature, label_weight, teacher="final",
                         **phase_fields)


def cotrained_teacher(ctx: MethodContext, every: int = 1, refresh: int = 1) -> CoTrain:
    """A fresh teacher trained on labels by its recipe inside the run, with a frozen target copy."""
    teacher = ctx.make_teacher()
    teacher.train()
    target = copy.deepcopy(teacher)
    target.eval()
    for p in target.parameters():
        p.requires_grad_(False)
    return CoTrain(model=teacher, loss=lambda b: F.cross_entropy(logits(teacher, b), b.labels),
                   recipe=ctx.teacher_recipe, every=every, target=target, refresh=refresh)


def lockstep_phases(ctx: MethodContext, cotrain: CoTrain, name: str, follow: Callable, final_temperature: float = 1.0,
                    label_weight: float = 0.0) -> list[Phase]:
    """``follow`` (a loss reading ``cotrain.target``) while the teacher trains, then the final teacher."""
    target = cotrain.target
    return [
        Phase(name, loss=follow, steps=cotrain.every * cotrain.total_steps, teacher="co-trained",
              cotrain=cotrain, cost_key="distill"),
        distill_phase("final-teacher", ctx.student, lambda: target, final_temperature, label_weight,
                      teacher="final (co-trained)", cost_key="distill"),
    ]
