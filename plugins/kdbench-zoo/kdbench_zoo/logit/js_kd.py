"""Jensen-Shannon distillation, as the LLM-distillation literature uses it: Agarwal, Vieillard, Zhou,
Stanczyk, Ramos, Geist and Bachem (2024), "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes" (GKD), ICLR 2024, whose generalised JSD (Section 3, Eq. 2) is

    JSD(beta)(P || Q) = beta * KL(P || M) + (1 - beta) * KL(Q || M),   M = beta * P + (1 - beta) * Q

with ``P`` the teacher's and ``Q`` the student's distribution; ``beta = 0.5`` (the default) is the
Jensen-Shannon divergence of Lin (1991), symmetric and bounded by log 2. Both distributions are
softened by ``temperature`` and the divergence is scaled by ``T^2`` (kdbench's one-shot convention:
at the papers' T = 1 it is their loss), and mixed with the labels by ``label_weight`` as one-shot
does. The divergence is kdbench's :func:`kdbench.losses.generalised_jsd` (GKD uses it too); the mixture
is formed in log space (a log-sum-exp), so no probability is rounded to log 0.
"""

from __future__ import annotations

import torch
from pydantic import Field

from kdbench import BasicDistillOptions, Method, generalised_jsd

from kdbench_zoo.logit.common import divergence_phase


class JSParams(BasicDistillOptions):
    """The temperature and label weight of one-shot, and the mixture weight ``beta``."""

    beta: float = Field(0.5, gt=0, lt=1, description="weight of the teacher in the mixture M = beta P + (1 - beta) "
                                                     "Q (0.5: the Jensen-Shannon divergence)")


def generalised_js(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over rows of JSD(beta)(teacher || student): :func:`kdbench.losses.generalised_jsd`."""
    return generalised_jsd(student_logits, teacher_logits, beta)


class JSKD(Method):
    """The (generalised) Jensen-Shannon divergence between the final teacher's and the student's outputs."""

    name = "js-kd"
    version = "1"
    Params = JSParams
    description = "Jensen-Shannon divergence to the final teacher (generalised JSD, Agarwal et al. 2024)"

    def phases(self, ctx, params):
        return [divergence_phase(ctx, "js", params, lambda s, t: generalised_js(s, t, params.beta))]
