"""Contrastive representation distillation (Tian, Krishnan & Isola 2020, "Contrastive Representation
Distillation", ICLR).

The student's representation of an input should be closer to the teacher's representation of the same
input than to the teacher's representations of other inputs (Sec. 3), and symmetrically:

- embedding heads g^S, g^T: a linear map of each model's penultimate representation to ``embed_dim``
  (128), L2-normalised (Sec. 3, "g^T and g^S linearly transform ... then l2 normalise"); both train, the
  teacher's backbone stays frozen;
- the critic h(T, S) = exp(g^T(t).g^S(s) / tau) / (exp(g^T(t).g^S(s) / tau) + N / M) (Eq. 19-20 of the
  bound's derivation; tau = 0.07, N negatives, M the data size);
- the NCE loss of that critic: -log h on the positive pair, -N E[log(1 - h)] on N negatives (Eq. 18),
  for student anchors against teacher embeddings and teacher anchors against student embeddings, summed
  (the authors' code, github.com/HobbitLong/RepDistiller, ContrastMemory and ContrastLoss); the total
  is CE + beta * L_crd with beta = 0.8 (Sec. 4.1).

As in the authors' code, exp(score / tau) is divided by a constant Z = mean(exp(score / tau)) * M fixed
on the first step; then h = e / (e + N * mean_first(e)): M cancels, so no data size is needed.

Memory bank and negatives. The paper keeps a bank with one embedding per training example, indexed by
the example's index and updated with momentum 0.5, and draws N = 16384 negatives per anchor from it.
kdbench's data are sampled afresh every step (parity, MLM): there are no example indices and an
example is (almost) never seen twice, so there is nothing to average with momentum. The bank here is
therefore a FIFO queue per model of its N most recent embeddings (He et al. 2020's MoCo queue, a common
reading of CRD for streaming data): every anchor is contrasted with its counterpart in the current
batch (the positive, without gradient, as the paper's positive comes from the bank) and with all N
queued embeddings of the other model (the negatives); the batch's embeddings then replace the oldest
ones. The queues start as the authors' code starts its memory (uniform in +-1/sqrt(embed_dim / 3),
drawn from the run's generator) and are reset, with Z, at the run's first step, so the FLOP probe
leaves no trace. ``negatives`` defaults to the paper's 16384; the bank's matmuls, 2 * batch * N *
embed_dim FLOPs per anchor side forward and as many backward, and the heads are charged with the step:
on a tiny MLP they cost far more than the student (lower ``negatives`` there). The queues, their write
position and Z are the phase's ``state``: saved with the run's, so a resumed run goes on as an
uninterrupted one. Its negatives come from the queue, so it runs with any batch size, 1 included.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kdbench import Clock, Method, MethodContext, Phase
from kdbench_zoo.relation.features import RelationParams, TaskShape, last_layers, relation_phase


class CRDParams(RelationParams):
    """CRD's weight, head width, negatives and temperature (the paper's), and the shared relation params."""

    crd_weight: float = Field(0.8, ge=0, description="beta: weight of the contrastive loss (paper: 0.8)")
    embed_dim: int = Field(128, ge=1, description="width of the embedding heads g^S, g^T (paper: 128)")
    negatives: int = Field(16384, ge=1, description="N: negatives per anchor, the size of each FIFO queue "
                                                    "(paper: 16384)")
    nce_temperature: float = Field(0.07, gt=0, description="tau of the critic (paper: 0.07)")


def make_head(d_in: int, d_out: int, generator: torch.Generator, device: torch.device) -> nn.Linear:
    """``nn.Linear(d_in, d_out)`` initialised as torch's default, from ``generator`` only."""
    head = nn.Linear(d_in, d_out, device="meta").to_empty(device="cpu")
    bound = 1 / math.sqrt(d_in)
    with torch.no_grad():
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.uniform_(-bound, bound, generator=generator)
    return head.to(device)


class ContrastBank:
    """Two FIFO queues (student, teacher) of ``size`` embeddings each, and the NCE constants Z."""

    def __init__(self, size: int, dim: int, generator: torch.Generator, device: torch.device):
        stdv = 1 / math.sqrt(dim / 3)
        self.initial = (torch.rand(2, size, dim, generator=generator) * 2 * stdv - stdv).to(device)
        self.reset()

    def reset(self) -> None:
        """Back to the initial queues, no Z yet."""
        self.queues = self.initial.clone()
        self.pointer = 0
        self.log_z: list = [None, None]

    def push(self, student: torch.Tensor, teacher: torch.Tensor) -> None:
        """The batch's embeddings replace the oldest ones."""
        size = self.queues.shape[1]
        new = torch.stack([student, teacher])[:, -size:]
        slots = (self.pointer + torch.arange(new.shape[1], device=new.device)) % size
        self.queues = self.queues.index_copy(1, slots, new)  # a new tensor: this step's graph keeps the old one
        self.pointer = (self.pointer + new.shape[1]) % size

    def state_dict(self) -> dict:
        """The queues, the write position and Z, saved with the run's state (:attr:`kdbench.Phase.state`)."""
        return {"queues": self.queues, "pointer": self.pointer,
                "log_z": list(self.log_z)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved state: a resumed run draws the negatives an uninterrupted one would."""
        self.queues = state["queues"].to(self.initial.device)
        self.pointer = state["pointer"]
        self.log_z = [None if z is None else z.to(self.initial.device) for z in state["log_z"]]


def nce_loss(anchor: torch.Tensor, positive: torch.Tensor, queue: torch.Tensor, tau: float,
             bank: ContrastBank, side: int) -> torch.Tensor:
    """-(sum log h(positive) + sum log(1 - h(negatives))) / batch, h = e / (e + N Z), Z fixed on the first call."""
    pos = (anchor * positive).sum(dim=1, keepdim=True) / tau
    neg = anchor @ queue.t() / tau
    scores = torch.cat([pos, neg], dim=1)
    if bank.log_z[side] is None:  # the authors' code: Z from the first batch, then constant
        bank.log_z[side] = torch.logsumexp(scores.detach().flatten(), 0) - math.log(scores.numel())
    log_nz = math.log(queue.shape[0]) + bank.log_z[side]
    log_h_pos = pos - torch.logaddexp(pos, log_nz)
    log_not_h_neg = log_nz - torch.logaddexp(neg, log_nz)
    return -(log_h_pos.sum() + log_not_h_neg.sum()) / len(anchor)


class CRDLoss:
    """L_crd of one step: both heads, both anchor sides, then the queues move on."""

    def __init__(self, heads: tuple[nn.Linear, nn.Linear], bank: ContrastBank, clock: Clock, params: CRDParams):
        self.heads, self.bank, self.clock, self.params = heads, bank, clock, params

    def __call__(self, s_reps: list[torch.Tensor], t_reps: list[torch.Tensor]) -> torch.Tensor:
        if self.clock.step == 0:  # every call at step 0 (the FLOP probe's, the run's first) starts afresh
            self.bank.reset()
        (s,), (t,) = s_reps, t_reps
        fs, ft = F.normalize(self.heads[0](s), dim=1), F.normalize(self.heads[1](t), dim=1)
        tau, (q_student, q_teacher) = self.params.nce_temperature, self.bank.queues
        loss = nce_loss(fs, ft.detach(), q_teacher, tau, self.bank, 0) \
            + nce_loss(ft, fs.detach(), q_student, tau, self.bank, 1)
        self.bank.push(fs.detach(), ft.detach())
        return self.params.crd_weight * loss


class CRD(Method):
    """Contrastive (NCE) matching of embedded student and teacher representations, plus cross-entropy."""

    name = "crd"
    version = "1"
    Params = CRDParams
    description = "contrastive representation distillation: NCE over a queue of negatives (Tian et al. 2020)"

    def phases(self, ctx: MethodContext, params: CRDParams) -> list[Phase]:
        shape = TaskShape(ctx)
        how = shape.resolve(self.name, params.representation)
        (s_layer, t_layer), teacher = last_layers(ctx), ctx.teacher.final()
        width = {"flatten": shape.length}.get(how, 1)
        heads = (make_head(width * ctx.student.hidden_size(s_layer), params.embed_dim, ctx.generator, ctx.device),
                 make_head(width * teacher.hidden_size(t_layer), params.embed_dim, ctx.generator, ctx.device))
        bank = ContrastBank(params.negatives, params.embed_dim, ctx.generator, ctx.device)
        extra = [p for head in heads for p in head.parameters()]
        return [relation_phase(ctx, params, "crd", how, CRDLoss(heads, bank, ctx.clock, params), extra=extra,
                               info={"negatives": params.negatives, "bank": "fifo"}, state=bank, min_samples=1)]
