"""Patient knowledge distillation (Sun, Cheng, Gan & Liu 2019, "Patient Knowledge Distillation for BERT Model
Compression", EMNLP 2019).

One phase, the whole budget, Eq. (4): ``L_PKD = (1 - alpha) L_CE + alpha L_DS + beta L_PT``, where

- ``L_DS``, Eq. (1): the soft cross-entropy to the teacher's predictions at temperature ``T`` (as the
  authors' code, KL times ``T^2``: kdbench's :func:`kdbench.distillation_loss`);
- ``L_CE``, Eq. (2): cross-entropy on the true labels;
- ``L_PT``, Eq. (3): the squared distance between the L2-normalised representations of the student's
  intermediate layers ``j = 1..M-1`` and of their teacher layers ``I_pt(j)``; averaged over layers,
  examples and dimensions as the authors' code does (``mse_loss`` of the normalised vectors), the scale
  the paper's ``beta`` grid was chosen for. The last layer is left out: ``L_DS`` covers it.

``strategy``: PKD-Skip, ``I_pt(j) = j * N / M`` (every k-th teacher layer: 2, 4, ..., 10 for 12 -> 6;
rounded when M does not divide N), or PKD-Last, ``I_pt(j) = N - M + j`` (7..11 for 12 -> 6).

The representation is BERT's ``[CLS]`` vector (the paper: the position the prediction is read from).
``position: auto`` takes that position in kdbench's settings: on a classification encoder the last
token (kdbench's encoders read classes out at the last position), on an MLM task the masked tokens (the
positions that predict), on an MLP the layer's output itself; ``first``, ``last`` and ``all`` force one.

Widths: the paper's student and teacher share the hidden size (768). When they differ, as in most
kdbench tasks, a learned linear map ``W_j`` per compared layer (student width -> teacher width, BERT's
initialisation N(0, 0.02) and zero bias, from the run's random stream) projects the student's vector
before it is normalised, as TinyBERT's ``W_h`` does; with equal widths there is none, as in the paper.

Defaults: the paper searched ``T in {5, 10, 20}``, ``alpha in {0.2, 0.5, 0.7}``, ``beta in {10, 100, 500,
1000}`` per task; the defaults are the middle of each grid (``beta`` 100), to be tuned like every method.
It applies to any layered model with at least 2 layers (an MLP too); a one-layer student has no
intermediate layer and is refused.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import Method, Params, Phase, UserError, distillation_loss

from kdbench_zoo.transformer.common import bert_linear


class PKDParams(Params):
    """Eq. (4)'s weights, the distillation temperature, the layer strategy and the position compared."""

    temperature: float = Field(10.0, gt=0, description="softmax temperature of L_DS (paper grid 5, 10, 20)")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of L_DS; 1 - alpha weighs L_CE (grid 0.2, 0.5, 0.7)")
    beta: float = Field(100.0, ge=0, description="weight of the patient loss L_PT (grid 10, 100, 500, 1000)")
    strategy: Literal["skip", "last"] = Field(
        "skip", description="PKD-Skip (teacher layers j*N/M) or PKD-Last (the last M-1 below the top)")
    position: Literal["auto", "first", "last", "all"] = Field(
        "auto", description="token position compared (encoders): auto = the read-out ([CLS]) position: the last "
                            "token, or the masked tokens of MLM")


def teacher_layers(strategy: str, student_layers: int, teacher_layers_: int) -> list[int]:
    """``I_pt(j)`` for the student's intermediate layers ``j = 1..M-1``."""
    m, n = student_layers, teacher_layers_
    if strategy == "last":
        return [n - m + j for j in range(1, m)]
    return [max(1, round(j * n / m)) for j in range(1, m)]


def compared_vectors(h: torch.Tensor, mask, position: str) -> torch.Tensor:
    """The vectors of one layer's output that L_PT compares, ``[n, width]``."""
    if h.dim() == 2:  # an MLP's layer: one vector per example
        return h
    if position == "auto":
        position = "masked" if mask is not None else "last"
    if position == "masked":
        return h[mask]
    if position == "all":
        return h.reshape(-1, h.shape[-1])
    return h[:, 0] if position == "first" else h[:, -1]


class PatientLoss:
    """Eq. (4) on one batch: the student's intermediate layers and logits from one pass, the teacher's likewise."""

    def __init__(self, student, teacher, t_layers: list[int], params: PKDParams, maps: list):
        self.student, self.teacher, self.t_layers, self.params, self.maps = student, teacher, t_layers, params, maps
        self.s_layers = list(range(1, student.num_layers))

    def __call__(self, batch) -> torch.Tensor:
        p = self.params
        with torch.no_grad():  # the teacher's logits only when L_DS has weight
            t = self.teacher(batch.inputs, layers=self.t_layers, mask=batch.mask, with_logits=p.alpha > 0)
        s = self.student(batch.inputs, layers=self.s_layers, mask=batch.mask)
        s_vectors, t_vectors = [], []
        for a, b, w in zip(s.hidden, t.hidden, self.maps):
            a = compared_vectors(a, batch.mask, p.position)
            s_vectors.append(F.normalize((w(a) if w is not None else a).float(), p=2, dim=-1))
            t_vectors.append(F.normalize(compared_vectors(b, batch.mask, p.position).float(), p=2, dim=-1))
        patient = F.mse_loss(torch.stack(s_vectors), torch.stack(t_vectors))
        if p.alpha > 0:
            logit_loss = distillation_loss(s.logits, t.logits, batch.labels, p.temperature, 1 - p.alpha)
        else:
            logit_loss = F.cross_entropy(s.logits.float(), batch.labels)
        return logit_loss + p.beta * patient


class PKD(Method):
    """Normalised intermediate-layer representations (PKD-Skip or PKD-Last), with KD and labels."""

    name = "pkd"
    version = "1"
    Params = PKDParams
    description = "patient KD: normalised [CLS] states of intermediate layers + KD + labels (Sun et al. 2019)"

    def phases(self, ctx, params):
        student, teacher = ctx.student, ctx.teacher.final()
        m, n = student.num_layers, teacher.num_layers
        if m < 2:
            raise UserError(f"pkd: cannot apply to this task: its student ({type(student).__name__}) has {m} layer; "
                            "patient KD matches the student's intermediate layers 1..M-1 and needs M >= 2")
        if n < m:
            raise UserError(f"pkd: params.strategy: the teacher has {n} layers, fewer than the student's {m}; "
                            "both strategies map M-1 student layers onto distinct teacher layers below the top")
        t_layers = teacher_layers(params.strategy, m, n)
        widths = [(student.hidden_size(j), teacher.hidden_size(g)) for j, g in zip(range(1, m), t_layers)]
        maps = [bert_linear(d_s, d_t, ctx.generator, ctx.device) if d_s != d_t else None for d_s, d_t in widths]
        extra = [q for w in maps if w is not None for q in w.parameters()]
        return [Phase("patient", loss=PatientLoss(student, teacher, t_layers, params, maps), teacher="final",
                      params=[*student.parameters(), *extra] if extra else None,
                      info={"student_layers": list(range(1, m)), "teacher_layers": t_layers,
                            "projected": any(w is not None for w in maps)})]
