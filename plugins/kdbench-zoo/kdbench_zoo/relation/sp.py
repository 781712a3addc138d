"""Similarity-preserving knowledge distillation (Tung & Mori 2019, "Similarity-Preserving Knowledge
Distillation", ICCV).

Inputs that the teacher represents alike should be represented alike by the student (Sec. 3):

- Q: a layer's activation map of the batch reshaped to ``[b, c*h*w]`` (here a layer's output flattened
  per example: ``[b, hidden]`` for an MLP, ``[b, tokens * hidden]`` for an encoder, the whole map as in
  the paper); G~ = Q Q^T, the ``[b, b]`` similarities (Eq. 1, 3);
- G = G~ with each row L2-normalised (Eq. 2, 3);
- L_SP = (1 / b^2) sum over the layer pairs I of ||G_T - G_S||_F^2 (Eq. 4), and the total loss
  L = L_CE + gamma L_SP (Eq. 5), gamma = 3000 in the paper's CIFAR-10 experiments.

Scaling: rows of G have unit norm, so ||G_T - G_S||_F^2 <= 4b and L_SP <= 4 / b: at the paper's batch
of 128 the term is smaller than at kdbench's small batches (16-32) by up to 4-8x for the same
disagreement; gamma is a param (tune it, or scale it by b / 128 to keep the paper's balance).

Layer pairs I (``layers``): ``last`` (default: the last layer of student and teacher, as Tian et al.
2020's re-implementation does) or ``all`` (every student layer with the teacher layer at the same
relative depth, round(l * L_T / L_S), all from one forward pass of each model).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import Method, MethodContext, Phase
from kdbench_zoo.relation.features import RelationParams, TaskShape, relation_phase


class SPParams(RelationParams):
    """SP's gamma and layer pairs, and the logit terms and representation of every relation method."""

    gamma: float = Field(3000.0, ge=0, description="weight of L_SP (paper, CIFAR-10 at batch 128: 3000)")
    layers: Literal["last", "all"] = Field(
        "last", description="layer pairs I: the last layers, or every student layer with the teacher layer "
                            "at the same relative depth")


def similarity(q: torch.Tensor) -> torch.Tensor:
    """G: the batch's ``[b, b]`` similarity matrix Q Q^T with L2-normalised rows."""
    return F.normalize(q @ q.t(), p=2, dim=1)


def sp_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1 / b^2) ||G_T - G_S||_F^2 for one layer pair."""
    return (similarity(t) - similarity(s)).pow(2).sum() / len(s) ** 2


class SP(Method):
    """Row-normalised batch similarity matrices of student and teacher matched (Frobenius), plus cross-entropy."""

    name = "sp"
    version = "1"
    Params = SPParams
    description = "similarity-preserving KD: match the batch's row-normalised Gram matrices (Tung & Mori 2019)"

    def phases(self, ctx: MethodContext, params: SPParams) -> list[Phase]:
        how = TaskShape(ctx).resolve(self.name, params.representation, whole_maps=True)
        s_depth, t_depth = ctx.student.num_layers, ctx.teacher.final().num_layers
        chosen = range(1, s_depth + 1) if params.layers == "all" else [s_depth]
        pairs = [(s, max(1, round(s * t_depth / s_depth))) for s in chosen]

        def relation(s_reps, t_reps):
            return params.gamma * sum(sp_loss(s, t) for s, t in zip(s_reps, t_reps))

        return [relation_phase(ctx, params, "sp", how, relation, layers=pairs)]
