"""Logit standardisation: Sun, Ren, Li, Wang and Cao (2024), "Logit Standardization in Knowledge
Distillation", CVPR 2024.

Teacher and student logits are each z-scored before the softmax: ``Z(z; tau) = (z - mean(z)) /
(std(z) * tau)`` (Eq. 10 and Algorithm 1), so the student matches the teacher's logit *relations*
rather than their magnitude, and the shared temperature becomes a per-sample one. The loss is
KD on the standardised logits: ``ce_weight * CE + kd_weight * tau^2 * KL(softmax(Z(z_t; tau)) ||
softmax(Z(z_s; tau)))``. ``std`` is the unbiased standard deviation plus 1e-7, as in the authors'
code (the paper's population std differs by sqrt(K / (K - 1)), a rescaling of ``tau``).
Defaults are the authors' KD setting on CIFAR-100: base temperature 2, KD weight 9, CE weight 0.1.
With two classes every z-score is +-1 (no gradient): such a task is refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import Method, Phase

from kdbench_zoo.logit.common import CEWeight, logit_pair, require_classes


class LogitStdParams(CEWeight):
    """The base temperature and the two loss weights (the authors' CIFAR-100 KD defaults)."""

    ce_weight: float = Field(0.1, ge=0, description="weight of the true-label cross-entropy added to the loss")
    kd_weight: float = Field(9.0, ge=0, description="weight of the KL between the standardised distributions")
    temperature: float = Field(2.0, gt=0, description="base temperature tau dividing the z-scored logits")


def standardise(z: torch.Tensor) -> torch.Tensor:
    """Each row z-scored: ``(z - mean) / (std + 1e-7)`` (unbiased std)."""
    return (z - z.mean(-1, keepdim=True)) / (z.std(-1, keepdim=True) + 1e-7)


class LogitStd(Method):
    """KD between the z-scored logits of teacher and student, plus cross-entropy."""

    name = "logit-std"
    version = "1"
    Params = LogitStdParams
    description = "KD on z-score standardised logits (Sun et al. 2024)"

    def phases(self, ctx, params):
        require_classes(ctx, self.name, 3, "the z-scores of 2 logits are always +-1")
        student, teacher, t = ctx.student, ctx.teacher.final(), params.temperature

        def loss(batch):
            s, target = logit_pair(student, teacher, batch)
            log_q = F.log_softmax(standardise(s) / t, -1)
            log_p = F.log_softmax(standardise(target) / t, -1)
            kd = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * (t * t)
            return params.ce_weight * F.cross_entropy(s, batch.labels) + params.kd_weight * kd

        return [Phase("logit-std", loss=loss, teacher="final")]
