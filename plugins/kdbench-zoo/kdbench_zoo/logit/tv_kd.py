"""Total-variation distillation: Wen, Li, Du and Mou (2023), "f-Divergence Minimization for
Sequence-Level Knowledge Distillation" (f-DISTILL), ACL 2023, whose TVD variant minimises the
total variation distance between the teacher's distribution ``P`` and the student's ``Q`` at each
position (Section 3.2, the step-wise decomposition of the sequence-level TVD):

    TVD(P, Q) = 1/2 * sum_c |P(c) - Q(c)|

It is symmetric and bounded by 1, and its gradient does not grow with a log-ratio, so a
student is not pushed hard towards classes the teacher barely uses. Both distributions are
softened by ``temperature``, the distance is scaled by ``T^2`` (kdbench's one-shot convention: at
the paper's T = 1 it is their loss) and mixed with the labels by ``label_weight`` as one-shot does.
"""

from __future__ import annotations

import torch

from kdbench import BasicDistillOptions, Method

from kdbench_zoo.logit.common import divergence_phase


class TVParams(BasicDistillOptions):
    """The temperature and label weight of one-shot; TVD has no parameter of its own."""


def total_variation(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``1/2 * sum |softmax(teacher) - softmax(student)|``."""
    return 0.5 * (teacher_logits.softmax(-1) - student_logits.softmax(-1)).abs().sum(-1).mean()


class TVKD(Method):
    """Total variation distance between the final teacher's and the student's outputs."""

    name = "tv-kd"
    version = "1"
    Params = TVParams
    description = "total variation distance to the final teacher (Wen et al. 2023)"

    def phases(self, ctx, params):
        return [divergence_phase(ctx, "tv", params, total_variation)]
