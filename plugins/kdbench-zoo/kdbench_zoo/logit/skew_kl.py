"""Skew KL: Ko, Kim, Chen and Yun (2024), "DistiLLM: Towards Streamlined Distillation for Large
Language Models", ICML 2024. With ``p`` the teacher's and ``q_theta`` the student's distribution,
the alpha-skew KL and alpha-skew reverse KL (Section 3.1, Eqs. 1-2) are

    SKL(alpha)  = KL(p || alpha * p + (1 - alpha) * q_theta)
    SRKL(alpha) = KL(q_theta || (1 - alpha) * p + alpha * q_theta)

Skewing the second argument towards the first bounds the divergence (by log 1/alpha) and keeps
its gradient finite where the student puts almost no mass; DistiLLM's default skew is
``alpha = 0.1`` (``direction: forward``, SKL; ``reverse``, SRKL). DistiLLM's adaptive off-policy
student-generated data is a sampling scheme for sequence models, not part of the loss, and is not
reproduced here. Both distributions are softened by ``temperature`` and the divergence scaled by
``T^2`` (kdbench's one-shot convention: at the paper's T = 1 it is their loss), mixed with the
labels by ``label_weight``. The mixture is formed in log space (a log-sum-exp).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import BasicDistillOptions, Method

from kdbench_zoo.logit.common import divergence_phase


class SkewKLParams(BasicDistillOptions):
    """The temperature and label weight of one-shot, the skew and its direction."""

    alpha: float = Field(0.1, gt=0, lt=1, description="skew: the share of the first argument mixed into the "
                                                      "second (DistiLLM: 0.1)")
    direction: Literal["forward", "reverse"] = Field(
        "forward", description="forward: SKL, KL(p || a p + (1-a) q); reverse: SRKL, KL(q || (1-a) p + a q)")


def skew_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float,
            direction: str = "forward") -> torch.Tensor:
    """Mean over rows of the alpha-skew KL (``forward``) or alpha-skew reverse KL (``reverse``)."""
    log_p, log_q = F.log_softmax(teacher_logits, -1), F.log_softmax(student_logits, -1)
    first, second = (log_p, log_q) if direction == "forward" else (log_q, log_p)
    log_mix = torch.logaddexp(first + math.log(alpha), second + math.log(1 - alpha))
    return (first.exp() * (first - log_mix)).sum(-1).mean()


class SkewKL(Method):
    """DistiLLM's skew KL (or skew reverse KL) to the final teacher."""

    name = "skew-kl"
    version = "1"
    Params = SkewKLParams
    description = "skew KL / skew reverse KL to the final teacher (DistiLLM, Ko et al. 2024)"

    def phases(self, ctx, params):
        return [divergence_phase(ctx, f"skew-{params.direction}",
                                 params, lambda s, t: skew_kl(s, t, params.alpha, params.direction))]
