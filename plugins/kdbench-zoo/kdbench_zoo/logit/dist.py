"""DIST: Huang, You, Wang, Qian and Xu (2022), "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022.

Exact matching of probabilities is relaxed to matching their relations, with the Pearson
distance ``d_p(u, v) = 1 - rho_p(u, v)`` (Eqs. 3-4). With ``Y = softmax(Z / tau)`` the ``B x C``
prediction matrices of a batch, the inter-class relation compares each row (one sample's
scores over the classes, Eq. 5): ``L_inter = tau^2 / B * sum_i d_p(Y^s_i,:, Y^t_i,:)``; the
intra-class relation compares each column (one class's scores over the batch, Eq. 6):
``L_intra = tau^2 / C * sum_j d_p(Y^s_:,j, Y^t_:,j)``; the loss is
``alpha * CE + beta * L_inter + gamma * L_intra`` (Eq. 7). Defaults are the paper's ImageNet
setting: alpha (``ce_weight``) 1, beta 1, gamma 1, tau 1. ``rho_p`` is the cosine of the centred
vectors with 1e-8 in the denominator, as in the authors' code.

For MLM tasks the batch's rows are its masked positions and the classes its vocabulary. With
two classes the inter-class correlation is always +-1 (no gradient): such a task is refused; so is a
batch of one row while ``gamma`` > 0 (its intra-class correlation has nothing to correlate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import Method, Phase, UserError

from kdbench_zoo.logit.common import CEWeight, logit_pair, require_classes


class DISTParams(CEWeight):
    """DIST's weights and temperature (the paper's ImageNet defaults)."""

    beta: float = Field(1.0, ge=0, description="weight of the inter-class relation (rows: each sample's classes)")
    gamma: float = Field(1.0, ge=0, description="weight of the intra-class relation (columns: each class over the "
                                                "batch)")
    tau: float = Field(1.0, gt=0, description="softmax temperature (the relation terms are scaled by tau^2)")


def pearson_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean over rows of ``1 - pearson(a_i, b_i)``."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return 1 - ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)).mean()


class DIST(Method):
    """Pearson relations of the softened predictions, across classes and across the batch, plus cross-entropy."""

    name = "dist"
    version = "1"
    Params = DISTParams
    description = "inter- and intra-class Pearson relations of predictions (Huang et al. 2022)"

    def phases(self, ctx, params):
        require_classes(ctx, self.name, 3, "the inter-class Pearson correlation of 2 scores is always +-1")
        student, teacher, tau = ctx.student, ctx.teacher.final(), params.tau

        def loss(batch):
            s, target = logit_pair(student, teacher, batch)
            if params.gamma > 0 and len(s) < 2:
                raise UserError(f"dist: the intra-class relation correlates each class's scores across the "
                                f"batch, and this batch has {len(s)} row: student.batch_size must be at least 2 "
                                f"(or gamma: 0)")
            y_s, y_t = (s / tau).softmax(-1), (target / tau).softmax(-1)
            inter, intra = pearson_distance(y_s, y_t), pearson_distance(y_s.T, y_t.T)
            return (params.ce_weight * F.cross_entropy(s, batch.labels)
                    + tau * tau * (params.beta * inter + params.gamma * intra))

        return [Phase("dist", loss=loss, teacher="final")]
