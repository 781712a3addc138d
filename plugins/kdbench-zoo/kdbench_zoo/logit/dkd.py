"""DKD: Zhao, Cui, Song, Qiu and Liang (2022), "Decoupled Knowledge Distillation", CVPR 2022.

With ``p`` the softmax at temperature ``T`` (Eq. 1), ``b = [p_t, 1 - p_t]`` the binary target /
non-target probabilities (Eq. 2) and ``p_hat`` the distribution among the non-target classes
(Eq. 3), the KD loss splits (Eqs. 4-7) into ``KD = TCKD + (1 - p_t^T) NCKD`` with
``TCKD = KL(b^T || b^S)`` and ``NCKD = KL(p_hat^T || p_hat^S)``; DKD weights the two freely
(Eq. 8): ``DKD = alpha * TCKD + beta * NCKD``.

The loss per step is ``ce_weight * CE(labels) + min(f / warmup, 1) * DKD`` with the DKD terms at
temperature ``T`` times ``T^2`` and ``f`` the run's fraction done: the authors' code adds the
cross-entropy (weight 1) and ramps DKD in linearly over the first 20 of 240 epochs (``warmup``
1/12 of the run here). Defaults are the paper's CIFAR-100 settings: alpha 1, beta 8, T 4.
``t`` is the true class (``batch.labels``; for MLM, the masked token). With two classes there
are no non-target classes to decouple (NCKD is 0, DKD is alpha * KD): such a task is refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import Method, Phase

from kdbench_zoo.logit.common import CEWeight, logit_pair, require_classes


class DKDParams(CEWeight):
    """DKD's weights, temperature and warm-up (the paper's CIFAR-100 defaults)."""

    alpha: float = Field(1.0, ge=0, description="weight of TCKD, the target-class (binary) KL")
    beta: float = Field(8.0, ge=0, description="weight of NCKD, the KL among the non-target classes")
    temperature: float = Field(4.0, gt=0, description="softmax temperature of both terms (times T^2)")
    warmup: float = Field(1 / 12, ge=0, lt=1, description="fraction of the run over which the DKD terms ramp "
                                                          "linearly from 0 to full weight (paper: 20 of 240 epochs)")


def decoupled_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                    temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``(TCKD, NCKD)`` at ``temperature`` (without the T^2 factor), from log-sum-exps for stability."""

    def parts(z):
        z = z / temperature
        target = F.one_hot(labels, z.shape[-1]).bool()
        rest = z[~target].view(z.shape[0], -1)  # the non-target logits, in class order
        total, rest_total = z.logsumexp(-1), rest.logsumexp(-1)
        log_b = torch.stack([z[target] - total, rest_total - total], dim=-1)
        return log_b, rest - rest_total[:, None]

    log_b_s, log_hat_s = parts(student_logits)
    log_b_t, log_hat_t = parts(teacher_logits)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(-1)
    nckd = (log_hat_t.exp() * (log_hat_t - log_hat_s)).sum(-1)
    return tckd, nckd


class DKD(Method):
    """alpha * TCKD + beta * NCKD to the final teacher, plus cross-entropy, with a linear warm-up."""

    name = "dkd"
    version = "1"
    Params = DKDParams
    description = "decoupled KD: alpha * target-class KL + beta * non-target KL (Zhao et al. 2022)"

    def phases(self, ctx, params):
        require_classes(ctx, self.name, 3, "NCKD is the KL among the non-target classes: with 2 there is one")
        student, teacher, clock, t = ctx.student, ctx.teacher.final(), ctx.clock, params.temperature

        def loss(batch):
            s, target = logit_pair(student, teacher, batch)
            tckd, nckd = decoupled_terms(s, target, batch.labels, t)
            ramp = min(clock.step / max(1, clock.total_steps) / params.warmup, 1.0) if params.warmup else 1.0
            dkd = (params.alpha * tckd.mean() + params.beta * nckd.mean()) * (t * t)
            return params.ce_weight * F.cross_entropy(s, batch.labels) + ramp * dkd

        return [Phase("dkd", loss=loss, teacher="final")]
