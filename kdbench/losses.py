"""Losses shared by distillation methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
