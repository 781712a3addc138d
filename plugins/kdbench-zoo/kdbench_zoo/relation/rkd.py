"""Relational knowledge distillation (Park, Kim, Lu & Cho 2019, "Relational Knowledge Distillation", CVPR).

The student's penultimate representation s_1..s_n of a batch matches the *relations* of the teacher's
t_1..t_n, not the vectors (the two may differ in width):

- distance-wise (Sec. 3.2.1, Eq. 3-5): psi_D(t_i, t_j) = ||t_i - t_j||_2 / mu, where mu is the mean
  distance over the batch's pairs of distinct examples (i != j), computed for teacher and student
  separately; L_D = mean over pairs of huber(psi_D(s_i, s_j), psi_D(t_i, t_j));
- angle-wise (Sec. 3.2.2, Eq. 6-7): psi_A(t_i, t_j, t_k) = <e_ij, e_kj>, e_ij = (t_i - t_j) / ||t_i - t_j||,
  the cosine of the angle at t_j; L_A = mean over triplets of huber(psi_A(s), psi_A(t));
- the Huber loss l_delta with delta = 1 (Eq. 5), and the weights lambda_D = 25, lambda_A = 50 the paper
  uses for its classification experiments (Sec. 4.2), added to the cross-entropy on the labels.

Reductions follow the authors' code (github.com/lenscloth/RKD): means over all n^2 pairs and n^3
triplets, whose degenerate entries (i = j, or k = j) are 0 for both models; mu, as in Eq. 4, averages
the n(n - 1) pairs of distinct examples (the code averages the non-zero distances: the same unless two
examples coincide). The representation is the last hidden layer (the paper: the final pooling layer);
encoders: see :mod:`kdbench_zoo.relation.features`. The relation terms are batch-wise: a step costs
O(n^2 d) for the distances and O(n^3 d) for the angles, charged like the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import Method, MethodContext, Phase
from kdbench_zoo.relation.features import RelationParams, TaskShape, relation_phase


class RKDParams(RelationParams):
    """RKD's weights (the paper's) and the logit terms and representation of every relation method."""

    distance_weight: float = Field(25.0, ge=0, description="lambda_D: weight of the distance-wise loss (paper: 25)")
    angle_weight: float = Field(50.0, ge=0, description="lambda_A: weight of the angle-wise loss (paper: 50)")


def distances(e: torch.Tensor) -> torch.Tensor:
    """``[n, n]`` Euclidean distances between the rows of ``e`` (zero diagonal), through one matmul."""
    squared = e.pow(2).sum(dim=1)
    d2 = (squared.unsqueeze(0) + squared.unsqueeze(1) - 2 * (e @ e.t())).clamp(min=1e-12)
    return d2.sqrt() * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def distance_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """L_D: Huber between the mean-normalised distance matrices of student and teacher."""
    pairs = len(s) * (len(s) - 1)
    ds, dt = distances(s), distances(t)
    return F.smooth_l1_loss(ds / (ds.sum() / pairs), dt / (dt.sum() / pairs))


def angles(e: torch.Tensor) -> torch.Tensor:
    """``[n, n, n]``: entry (j, i, k) is the cosine of the angle at e_j between e_i and e_k."""
    directions = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # (j, i): e_i - e_j
    return torch.bmm(directions, directions.transpose(1, 2))


def angle_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """L_A: Huber between the angle tensors of student and teacher."""
    return F.smooth_l1_loss(angles(s), angles(t))


class RKD(Method):
    """Distance-wise and angle-wise relations of the penultimate representation, plus cross-entropy."""

    name = "rkd"
    version = "1"
    Params = RKDParams
    description = "relational KD: distances and angles between samples' representations (Park et al. 2019)"

    def phases(self, ctx: MethodContext, params: RKDParams) -> list[Phase]:
        how = TaskShape(ctx).resolve(self.name, params.representation)

        def relation(s_reps, t_reps):
            (s,), (t,) = s_reps, t_reps
            loss = s.new_zeros(())
            if params.distance_weight > 0:
                loss = loss + params.distance_weight * distance_loss(s, t)
            if params.angle_weight > 0:  # a weight of 0 skips the cubic term, and its cost
                loss = loss + params.angle_weight * angle_loss(s, t)
            return loss

        return [relation_phase(ctx, params, "rkd", how, relation)]
