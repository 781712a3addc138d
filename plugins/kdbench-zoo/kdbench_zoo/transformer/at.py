"""Attention transfer (Zagoruyko & Komodakis 2017, "Paying More Attention to Attention: Improving the Performance
of Convolutional Neural Networks via Attention Transfer", ICLR 2017), for transformers.

Eq. (2): ``L = L_CE + beta/2 * sum_j || Q_S^j / ||Q_S^j||_2 - Q_T^j / ||Q_T^j||_2 ||``, the attention maps
``Q^j`` vectorised and L2-normalised per example, at pairs ``j`` of corresponding layers. As the authors'
code does, each pair's term is the *squared* difference averaged over the batch and the map's entries,
so ``beta = 1000`` is the paper's "10^3 divided by the number of elements in the attention map and the
batch size" (Sec. 4.1); ``p = 2``.

The paper's attention maps are spatial maps of a CNN's activations. For transformers (the documented
choice of this implementation) ``map: attention`` uses each layer's self-attention probabilities,
averaged over heads (so head counts may differ): a ``tokens x tokens`` map per example;
``map: activation`` is the paper's activation-based map ``F(A) = sum_c |A_c|^2`` with tokens as the
spatial positions: the sum over the hidden dimension of the squared layer output, one value per token.
Pairs: every student layer ``m`` with teacher layer ``round(m * N / M)`` (the paper places AT at the end
of each group of residual blocks; a transformer's layers are its groups). An MLP has no token positions
and no attention: the method refuses it.

``kd_weight > 0`` adds Hinton's KD at ``temperature``, as the paper's AT+KD experiments (there 0.9 and 4):
``(1 - kd_weight) L_CE + kd_weight KD + beta/2 sum_j AT_j``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import Method, Params, Phase, distillation_loss, require_internals

from kdbench_zoo.transformer.common import uniform_map


class ATParams(Params):
    """Eq. (2)'s weight, the map used for a transformer layer, and the optional KD term."""

    beta: float = Field(1000.0, ge=0, description="weight of the attention-transfer terms, Eq. (2) (paper 10^3)")
    map: Literal["attention", "activation"] = Field(
        "attention", description="self-attention probabilities averaged over heads, or the paper's activation map "
                                 "sum_c A_c^2 per token")
    kd_weight: float = Field(0.0, ge=0, le=1, description="weight of Hinton's KD beside the labels (AT+KD: 0.9)")
    temperature: float = Field(4.0, gt=0, description="KD temperature when kd_weight > 0 (paper 4)")


def attention_map(hidden: torch.Tensor, inside, kind: str) -> torch.Tensor:
    """One layer's map per example, vectorised and L2-normalised: ``[batch, entries]``."""
    if kind == "attention":
        q = inside.attention.float().mean(dim=1)  # [batch, tokens, tokens]
    else:
        q = hidden.float().pow(2).sum(dim=-1)  # [batch, tokens]
    return F.normalize(q.flatten(1), p=2, dim=1)


def at_term(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """One pair's term: the squared difference of the normalised maps, averaged over batch and entries."""
    return (student_map - teacher_map).pow(2).mean()


class ATLoss:
    """Eq. (2) on one batch: the student's maps and logits from one pass, the teacher's maps (and logits for KD)."""

    def __init__(self, student, teacher, t_layers: list[int], params: ATParams):
        self.student, self.teacher, self.t_layers, self.params = student, teacher, t_layers, params
        self.s_layers = list(range(1, student.num_layers + 1))
        self.internals = ("attention",) if params.map == "attention" else ()

    def __call__(self, batch) -> torch.Tensor:
        p, kd = self.params, self.params.kd_weight > 0
        with torch.no_grad():
            t = self.teacher(batch.inputs, layers=self.t_layers, mask=batch.mask, internals=self.internals,
                             with_logits=kd)
        s = self.student(batch.inputs, layers=self.s_layers, mask=batch.mask, internals=self.internals)
        t_in = t.internals if self.internals else [None] * len(self.t_layers)
        s_in = s.internals if self.internals else [None] * len(self.s_layers)
        transfer = sum(at_term(attention_map(hs, si, p.map), attention_map(ht, ti, p.map))
                       for hs, si, ht, ti in zip(s.hidden, s_in, t.hidden, t_in))
        if kd:
            logit_loss = distillation_loss(s.logits, t.logits, batch.labels, p.temperature, 1 - p.kd_weight)
        else:
            logit_loss = F.cross_entropy(s.logits.float(), batch.labels)
        return logit_loss + p.beta / 2 * transfer


class AttentionTransfer(Method):
    """Labels plus the L2 distance of normalised attention maps at corresponding layers."""

    name = "at"
    version = "1"
    Params = ATParams
    description = "attention transfer: labels + beta/2 * distance of normalised attention maps (Zagoruyko & " \
                  "Komodakis 2017)"

    def phases(self, ctx, params):
        student, teacher = ctx.student, ctx.teacher.final()
        why = "transfers attention maps over token positions"
        require_internals(student, ("attention",), self.name, why, "student")
        require_internals(teacher, ("attention",), self.name, why, "teacher")
        m_layers = student.num_layers
        t_layers = [uniform_map(m, m_layers, teacher.num_layers) for m in range(1, m_layers + 1)]
        return [Phase("attention-transfer", loss=ATLoss(student, teacher, t_layers, params), teacher="final",
                      info={"teacher_layers": t_layers, "map": params.map})]
