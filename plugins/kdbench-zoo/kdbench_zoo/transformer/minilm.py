"""MiniLM: deep self-attention distillation (Wang, Wei, Dong, Bao, Yang & Zhou 2020, "MiniLM: Deep
Self-Attention Distillation for Task-Agnostic Compression of Pre-Trained Transformers", NeurIPS 2020).

Phase ``self-attention``: the student's last layer M mimics the teacher's last layer L (Sec. 3.1):

- attention distributions, Eq. (7): ``L_AT = 1/(A_h |x|) sum_a sum_t KL(A^T_{L,a,t} || A^S_{M,a,t})``, the KL per
  head ``a`` and query position ``t`` of the softmax attention rows;
- value relation, Eq. (8): ``VR = softmax(V V^T / sqrt(d_k))`` per head (``d_k`` each model's own head size),
  ``L_VR = 1/(A_h |x|) sum_a sum_t KL(VR^T_{L,a,t} || VR^S_{M,a,t})``;
- Eq. (9): ``L = L_AT + L_VR`` (``value_relation: false`` drops L_VR, the paper's ablation).

The KLs are averaged over the batch, heads and positions (every token: the paper's ``|x|``). Causal
attention: the KL runs over the keys a query sees (hidden keys have probability 0 in both models); the
value relation, which the paper defines for bidirectional models, compares all value pairs.

This is MiniLM v1: it needs as many heads in the student's layer as in the teacher's (the paper's
setting) and refuses otherwise; v2's relation heads are not implemented. The teacher assistant of
Sec. 3.3 is not part of the method. Only the layers up to M (student) and L (teacher) run.

Phase 2: the paper distils task-agnostically, then fine-tunes the student on the task's labels
(Sec. 4): ``then: labels`` (default) is that fine-tuning, ``then: logits`` distils the teacher's logits
instead (``temperature``, ``label_weight``). ``transfer_share`` (how much of the budget the first phase
gets) is this setting's choice: the paper's two stages run on different data.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import BasicDistillOptions, Method, Phase, UserError, final_teacher_phase, logits, require_internals

from kdbench_zoo.transformer.common import equal_heads

NEEDS = ("scores", "values")


class MiniLMParams(BasicDistillOptions):
    """The self-attention phase's share and terms, and the phase after it (``temperature`` and
    ``label_weight`` apply with ``then: logits``)."""

    transfer_share: float = Field(0.5, gt=0, lt=1, description="share of the FLOP budget for self-attention transfer")
    value_relation: bool = Field(True, description="add the value-relation KL, Eq. (8) (the paper's L_AT + L_VR)")
    teacher_layer: Optional[int] = Field(None, ge=1, description="teacher layer to mimic (default: its last, L)")
    then: Literal["labels", "logits"] = Field(
        "labels", description="after the transfer: fine-tune on labels (the paper) or distil the teacher's logits")


def row_kl(teacher_scores: torch.Tensor, student_scores: torch.Tensor) -> torch.Tensor:
    """Mean over batch, heads and rows of ``KL(softmax(teacher row) || softmax(student row))``; a key
    both rows hide (score -inf, probability 0) adds nothing."""
    p_t = teacher_scores.float().softmax(-1)
    log_ratio = teacher_scores.float().log_softmax(-1) - student_scores.float().log_softmax(-1)
    return torch.where(p_t > 0, p_t * log_ratio, 0.0).sum(-1).mean()


def value_relation(values: torch.Tensor) -> torch.Tensor:
    """Eq. (8)'s relation logits ``V V^T / sqrt(d_k)`` per head (their softmax is VR)."""
    return values @ values.transpose(-2, -1) / values.shape[-1] ** 0.5


class SelfAttentionTransfer:
    """Phase 1's loss: Eq. (7) (+ Eq. (8)) between the student's layer ``s_layer`` and the teacher's ``t_layer``."""

    def __init__(self, student, teacher, s_layer: int, t_layer: int, params: MiniLMParams):
        self.student, self.teacher, self.s_layer, self.t_layer, self.params = student, teacher, s_layer, t_layer, params

    def __call__(self, batch) -> torch.Tensor:
        with torch.no_grad():
            t = self.teacher(batch.inputs, layers=[self.t_layer], internals=NEEDS, with_logits=False).internals[0]
        s = self.student(batch.inputs, layers=[self.s_layer], internals=NEEDS, with_logits=False).internals[0]
        loss = row_kl(t.scores, s.scores)
        if self.params.value_relation:
            loss = loss + row_kl(value_relation(t.values), value_relation(s.values))
        return loss


class MiniLM(Method):
    """Last-layer self-attention distributions and value relations (KL per head), then fine-tuning."""

    name = "minilm"
    version = "1"
    Params = MiniLMParams
    description = "last layer's self-attention distributions and value relations, KL per head (Wang et al. 2020)"

    def phases(self, ctx, params):
        student, teacher = ctx.student, ctx.teacher.final()
        why = "transfers the last layer's self-attention distributions and value relations"
        require_internals(student, NEEDS, self.name, why, "student")
        require_internals(teacher, NEEDS, self.name, why, "teacher")
        s_layer = student.num_layers
        t_layer = params.teacher_layer if params.teacher_layer is not None else teacher.num_layers
        if t_layer > teacher.num_layers:
            raise UserError(f"minilm: params.teacher_layer: {t_layer} is out of range; this task's teacher has "
                            f"layers 1..{teacher.num_layers}")
        heads = equal_heads(self.name, student, s_layer, teacher, t_layer,
                            "MiniLM (v1) compares attention head by head and needs equal head counts")
        transfer = Phase("self-attention", loss=SelfAttentionTransfer(student, teacher, s_layer, t_layer, params),
                         share=params.transfer_share, teacher=f"final, layer {t_layer}", depth=s_layer,
                         info={"student_layer": s_layer, "teacher_layer": t_layer, "heads": heads})
        if params.then == "logits":
            return [transfer, final_teacher_phase(ctx, name="logits", options=params)]
        return [transfer, Phase("fine-tune", loss=lambda b: F.cross_entropy(logits(student, b).float(), b.labels))]
