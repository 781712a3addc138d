"""Probabilistic knowledge transfer (Passalis & Tefas 2018, "Learning Deep Representations with
Probabilistic Knowledge Transfer", ECCV).

The teacher's and the student's representations of a batch are turned into conditional probability
distributions over the other samples, and the student's are fitted to the teacher's by KL divergence
(Sec. 3):

- the cosine-similarity kernel K(a, b) = (a.b / (||a|| ||b||) + 1) / 2, in [0, 1] (Eq. 10; the paper's
  choice over a Gaussian kernel, free of a bandwidth);
- p_{i|j} = K(t_i, t_j) / sum_{k != j} K(t_k, t_j) for the teacher, q_{i|j} likewise for the student
  (Eq. 6-7);
- L = sum_i sum_{j != i} p_{j|i} log(p_{j|i} / q_{j|i}) (Eq. 8), here averaged over the n(n - 1) pairs
  (so the weight does not scale with the batch), with eps = 1e-7 inside the logarithm as in the
  authors' code (github.com/passalis/probabilistic_kt). The sums leave out k = j as the equations do
  (the authors' code keeps the self-similarity in both).

The paper transfers the representation with this loss alone; as a distillation baseline it is added to
the cross-entropy on the labels with the weight 3e4 of Tian et al. 2020's benchmark (their code
averages over all n^2 entries; the pairs here are n(n - 1)). The representation is the last hidden
layer (the paper: the penultimate layer); encoders: see :mod:`kdbench_zoo.relation.features`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import Method, MethodContext, Phase
from kdbench_zoo.relation.features import RelationParams, TaskShape, relation_phase

EPS = 1e-7


class PKTParams(RelationParams):
    """PKT's weight, and the logit terms and representation of every relation method."""

    pkt_weight: float = Field(3e4, ge=0, description="weight of the PKT divergence (Tian et al. 2020's "
                                                     "benchmark: 3e4, beside the cross-entropy)")


def conditionals(e: torch.Tensor) -> torch.Tensor:
    """``[n, n]``: row j holds p_{i|j}, the cosine kernel normalised over the other samples (diagonal 0)."""
    unit = F.normalize(e, p=2, dim=1, eps=EPS)
    kernel = (unit @ unit.t() + 1) / 2
    kernel = kernel * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))
    return kernel / kernel.sum(dim=1, keepdim=True)


def pkt_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of the teacher's conditionals p and the student's q, averaged over the pairs i != j."""
    p, q = conditionals(t), conditionals(s)
    off = 1 - torch.eye(len(s), device=s.device, dtype=s.dtype)
    return (off * p * torch.log((p + EPS) / (q + EPS))).sum() / (len(s) * (len(s) - 1))


class PKT(Method):
    """The student's cosine-kernel conditional probabilities fitted to the teacher's (KL), plus cross-entropy."""

    name = "pkt"
    version = "1"
    Params = PKTParams
    description = "probabilistic KT: KL between cosine-kernel conditional probabilities (Passalis & Tefas 2018)"

    def phases(self, ctx: MethodContext, params: PKTParams) -> list[Phase]:
        how = TaskShape(ctx).resolve(self.name, params.representation)

        def relation(s_reps, t_reps):
            (s,), (t,) = s_reps, t_reps
            return params.pkt_weight * pkt_loss(s, t)

        return [relation_phase(ctx, params, "pkt", how, relation)]
