"""TinyBERT's transformer distillation (Jiao, Yin, Shang, Jiang, Chen, Li, Wang & Liu 2020, "TinyBERT: Distilling
BERT for Natural Language Understanding", Findings of EMNLP 2020).

Layer mapping (Sec. 3.1, the uniform strategy): student layer ``m`` learns from teacher layer
``g(m) = m * N / M`` (rounded when M does not divide N), ``g(0) = 0`` the embeddings.

Phase ``intermediate`` (the first stage), Eq. (11) with every ``lambda_m = 1``:
``L_embd + sum_{m=1..M} (L_attn(m) + L_hidn(m))``, where

- ``L_attn``, Eq. (7): ``1/h sum_i MSE(A^S_i, A^T_i)`` over the ``h`` heads, on the attention scores *before*
  the softmax (the paper's choice: it converges faster); where causal attention hides a key both scores
  are set to 0, as the authors' code does. ``attention: probabilities`` compares the softmax instead;
- ``L_hidn``, Eq. (8): ``MSE(H^S W_h, H^T)``, one learned ``W_h`` (width student -> teacher) for all layers;
- ``L_embd``, Eq. (9): ``MSE(E^S W_e, E^T)`` on the embedding output (the input of layer 1), its own ``W_e``.

``W_h`` and ``W_e`` are linear maps with a bias, initialised as BERT's weights (N(0, 0.02), bias 0, from
the run's random stream), learned with the student in this phase, even when the widths are equal.

Phase ``prediction`` (the second stage), Eq. (10): ``L_pred = CE(z^T / t, z^S / t)``, the soft
cross-entropy to the teacher's logits at temperature ``t = 1`` (kdbench's KL, the same gradients).

The paper's task-specific distillation ran the intermediate stage far longer than the prediction stage
(20 and 3 epochs, Sec. 4.2): ``intermediate_share`` defaults to 0.87 (about 20/23) of the budget. The general
(pre-training) distillation and the data augmentation of Sec. 3.2 are not part of the method. The
attention loss compares heads one to one: the student's layers need the teacher's head count (the
paper's setting), or the method refuses. Positions: every token, as the paper.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kdbench import BasicDistillOptions, Method, Phase, final_teacher_phase, require_internals

from kdbench_zoo.transformer.common import bert_linear, equal_heads, uniform_map

NEEDS = ("scores", "embeddings")


class TinyBERTParams(BasicDistillOptions):
    """The two stages' split, the attention target, and the prediction stage's ``temperature`` (Eq. 10's t = 1)
    and ``label_weight`` (0: the paper's prediction loss has no labels)."""

    intermediate_share: float = Field(
        0.87, gt=0, lt=1, description="share of the FLOP budget for the intermediate-layer stage (paper: 20 : 3 epochs)")
    attention: Literal["scores", "probabilities"] = Field(
        "scores", description="attention matrices compared by L_attn: pre-softmax scores (the paper) or softmax")


def attention_target(inside, kind: str) -> torch.Tensor:
    """A layer's compared attention matrix: its scores with hidden (-inf) keys at 0, or its probabilities."""
    if kind == "probabilities":
        return inside.scores.float().softmax(-1)
    scores = inside.scores.float()
    return torch.where(torch.isinf(scores), torch.zeros_like(scores), scores)


class IntermediateLoss:
    """Eq. (11): embeddings, then every student layer's attention and hidden states against layer g(m)."""

    def __init__(self, student, teacher, t_layers: list[int], w_e: nn.Linear, w_h: nn.Linear, kind: str):
        self.student, self.teacher, self.t_layers, self.w_e, self.w_h, self.kind = student, teacher, t_layers, w_e, \
            w_h, kind
        self.s_layers = list(range(1, student.num_layers + 1))

    def __call__(self, batch) -> torch.Tensor:
        with torch.no_grad():
            t = self.teacher(batch.inputs, layers=self.t_layers, internals=NEEDS, with_logits=False)
        s = self.student(batch.inputs, layers=self.s_layers, internals=NEEDS, with_logits=False)
        loss = F.mse_loss(self.w_e(s.embeddings).float(), t.embeddings.float())
        for s_inside, t_inside, s_h, t_h in zip(s.internals, t.internals, s.hidden, t.hidden):
            loss = loss + F.mse_loss(attention_target(s_inside, self.kind), attention_target(t_inside, self.kind))
            loss = loss + F.mse_loss(self.w_h(s_h).float(), t_h.float())
        return loss


class TinyBERT(Method):
    """Embeddings, attention scores and hidden states through learned projections (layer map g(m) = mN/M),
    then the teacher's logits."""

    name = "tinybert"
    version = "1"
    Params = TinyBERTParams
    description = "embeddings, attention scores and hidden states layer by layer (g(m) = mN/M), then logits " \
                  "(Jiao et al. 2020)"

    def phases(self, ctx, params):
        student, teacher = ctx.student, ctx.teacher.final()
        why = "matches the embeddings and every layer's attention scores and hidden states"
        require_internals(student, NEEDS, self.name, why, "student")
        require_internals(teacher, NEEDS, self.name, why, "teacher")
        m_layers, n_layers = student.num_layers, teacher.num_layers
        t_layers = [uniform_map(m, m_layers, n_layers) for m in range(1, m_layers + 1)]
        for m, g in zip(range(1, m_layers + 1), t_layers):
            equal_heads(self.name, student, m, teacher, g, "L_attn (Eq. 7) compares the attention heads one to one")
        d_s, d_t = student.hidden_size(1), teacher.hidden_size(1)
        w_e = bert_linear(d_s, d_t, ctx.generator, ctx.device)
        w_h = bert_linear(d_s, d_t, ctx.generator, ctx.device)
        trained = [*student.parameters(), *w_e.parameters(), *w_h.parameters()]
        return [Phase("intermediate", loss=IntermediateLoss(student, teacher, t_layers, w_e, w_h, params.attention),
                      share=params.intermediate_share, params=trained, teacher="final, layers g(m)",
                      depth=m_layers, info={"teacher_layers": t_layers}),
                final_teacher_phase(ctx, name="prediction", options=params)]
