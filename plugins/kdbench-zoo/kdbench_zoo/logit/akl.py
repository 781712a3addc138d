"""Adaptive KL: Wu, Tao, Wang, Yang, Zhao and Wong (2024), "Rethinking Kullback-Leibler Divergence in
Knowledge Distillation for Large Language Models", arXiv:2404.02657 (COLING 2025).

Forward KL fits the head of the teacher's distribution first, reverse KL its tail (Section 3).
AKL (Section 4) weights the two by where the student is furthest from the teacher: sort the
classes by the teacher's probability ``p``, descending; the head ``H`` is the smallest top set whose
mass reaches ``mu`` (the class that crosses ``mu`` included), the tail the rest. With the gaps
``g_head = sum_{c in H} |p_c - q_c|`` and ``g_tail = sum_{c not in H} |p_c - q_c|``,

    AKL = g_head / (g_head + g_tail) * KL(p || q) + g_tail / (g_head + g_tail) * KL(q || p)

per position (the paper's ``mu = 0.5`` by default). The weights are treated as constants (no
gradient flows through the gaps: they weight the two divergences, they are no loss of their own).
Both distributions are softened by ``temperature`` and the divergence scaled by ``T^2`` (kdbench's
one-shot convention: at the paper's T = 1 it is their loss), mixed with the labels by ``label_weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import BasicDistillOptions, Method

from kdbench_zoo.logit.common import divergence_phase


class AKLParams(BasicDistillOptions):
    """The temperature and label weight of one-shot, and the head's mass ``mu``."""

    mu: float = Field(0.5, gt=0, lt=1, description="the head: the teacher's top classes whose mass reaches mu")


def adaptive_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mu: float) -> torch.Tensor:
    """Mean over rows of the head/tail-gap weighted sum of forward and reverse KL."""
    log_p, log_q = F.log_softmax(teacher_logits, -1), F.log_softmax(student_logits, -1)
    p, q = log_p.exp(), log_q.exp()
    with torch.no_grad():
        p_sorted, order = p.sort(-1, descending=True)
        head_sorted = (p_sorted.cumsum(-1) - p_sorted) < mu  # the mass before a class has not reached mu yet
        head = torch.zeros_like(head_sorted).scatter(-1, order, head_sorted)
        gap = (p - q).abs()
        g_head, g_tail = (gap * head).sum(-1), (gap * ~head).sum(-1)
        w_head = g_head / (g_head + g_tail).clamp_min(1e-12)
    forward, reverse = (p * (log_p - log_q)).sum(-1), (q * (log_q - log_p)).sum(-1)
    return (w_head * forward + (1 - w_head) * reverse).mean()


class AKL(Method):
    """Adaptive KL: forward and reverse KL weighted by the student's head and tail gaps to the final teacher."""

    name = "akl"
    version = "1"
    Params = AKLParams
    description = "adaptive KL: forward/reverse KL weighted by head/tail gaps (Wu et al. 2024)"

    def phases(self, ctx, params):
        return [divergence_phase(ctx, "akl", params, lambda s, t: adaptive_kl(s, t, params.mu))]
