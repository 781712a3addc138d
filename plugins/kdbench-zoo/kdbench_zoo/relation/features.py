"""What the relation methods share: which representation is a "sample", and the one phase they train.

The relation papers work on a batch of images, one feature vector (or activation map) per image. Here
a layer's output is ``[batch, hidden]`` for an MLP and ``[batch, tokens, hidden]`` for an encoder, so
``representation`` says which vectors are the samples whose relations are matched:

- ``auto`` (default): an MLP's hidden vector; an encoder classifying a sequence (no mask: kdbench's
  classifiers read the last position) the last position's vector, where its logits are read; an
  encoder doing masked language modelling the mean over the sequence's tokens, one sample per
  sequence (as many samples as the batch has sequences, like the papers' images; the masked positions
  would be hundreds per batch, and the angle loss is cubic in the samples). A method whose paper
  matches whole activation maps (similarity-preserving) flattens the tokens instead (``flatten``);
- ``last`` / ``mean`` / ``flatten``: the last position, the mean over tokens, or every token's vector
  concatenated (``[batch, tokens * hidden]``), for encoders;
- ``masked``: every masked position is a sample (MLM tasks only): the positions the logits are read at.

The loss of every relation method is ``ce_weight * CE(labels) + kd_weight * KD_T + relation terms``
(the papers add their term to the cross-entropy, and some to Hinton et al.'s KD too): one pass of the
student gives the representation and the logits; the teacher runs under ``torch.no_grad()`` up to its
layer only, and through its head only when ``kd_weight > 0``.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench import MethodContext, Params, Phase, UserError, soft_cross_entropy

Representation = Literal["auto", "last", "mean", "flatten", "masked"]


class RelationParams(Params):
    """The params every relation method shares: the logit terms mixed in and the representation."""

    ce_weight: float = Field(1.0, ge=0, description="weight of the cross-entropy on the true labels "
                                                    "(the papers train with it)")
    kd_weight: float = Field(0.0, ge=0, description="weight of Hinton et al.'s KD term (KL to the teacher's "
                                                    "softened outputs, times T^2); 0: not computed")
    temperature: float = Field(4.0, gt=0, description="temperature of the KD term (when kd_weight > 0)")
    representation: Representation = Field(
        "auto", description="which vectors are the samples: auto (MLP: the hidden vector; encoder: the last "
                            "position, or the token mean for MLM), last, mean, flatten (tokens concatenated) "
                            "or masked (every masked position, MLM only)")


class TaskShape:
    """What a method needs to know of a task's student before it trains: tokens or not, mask or not."""

    def __init__(self, ctx: MethodContext):
        generator = torch.Generator(device=ctx.device).manual_seed(0)  # its own: the run's streams stay as they are
        batch = ctx.task.train_batch(generator, 2)
        student = ctx.student
        was_training = student.training
        student.eval()  # no dropout draws from the global generator
        try:
            with torch.no_grad():
                hidden = student(batch.inputs, upto=1)
        finally:
            student.train(was_training)
        self.tokens = hidden.ndim == 3
        self.length = hidden.shape[1] if self.tokens else 1  # tokens per sequence
        self.masked = batch.mask is not None
        self.model = type(student).__name__

    def resolve(self, method: str, how: str, whole_maps: bool = False) -> str:
        """``how`` with ``auto`` resolved, or a UserError naming the method, the model and the reason."""
        if not self.tokens:
            if how != "auto":
                raise UserError(f"{method}: params.representation: {how!r} needs a token model (an encoder); "
                                f"this task's student is a {self.model} with one vector per example: use auto")
            return "vector"
        if how == "masked" and not self.masked:
            raise UserError(f"{method}: params.representation: 'masked' needs a masked-language-modelling task; "
                            f"this task's {self.model} reads one output per sequence (no mask)")
        if how != "auto":
            return how
        if whole_maps:
            return "flatten"
        return "mean" if self.masked else "last"


def samples(hidden: torch.Tensor, mask: Optional[torch.Tensor], how: str) -> torch.Tensor:
    """The ``[n, d]`` sample vectors of a layer's output (see the module docstring)."""
    if how == "vector":
        return hidden
    if how == "last":
        return hidden[:, -1]
    if how == "mean":
        return hidden.mean(dim=1)
    if how == "flatten":
        return hidden.flatten(1)
    return hidden[mask]


def last_layers(ctx: MethodContext) -> tuple[int, int]:
    """The penultimate representations' layers: the last hidden layer of student and teacher."""
    return ctx.student.num_layers, ctx.teacher.final().num_layers


def relation_phase(ctx: MethodContext, params: RelationParams, name: str, how: str,
                   relation: Callable[[list[torch.Tensor], list[torch.Tensor]], torch.Tensor],
                   layers: Optional[Sequence[tuple[int, int]]] = None, extra: Sequence[torch.nn.Parameter] = (),
                   info: Optional[dict] = None, state=None, min_samples: int = 2) -> Phase:
    """One phase for the whole run: ``relation(student samples, teacher samples)`` (a list per layer
    pair of ``layers``, default the last layers) plus the logit terms of ``params``. ``extra`` are
    trainable tensors of the method's own (CRD's heads), trained with the student; ``state`` what it keeps
    between steps (CRD's queues, see :attr:`kdbench.Phase.state`). A batch with fewer than ``min_samples``
    samples is a :class:`kdbench.UserError` (the relations of one sample are empty or constant), which
    ``kdbench validate`` reports from its probe step, before anything trains."""
    student, teacher = ctx.student, ctx.teacher.final()
    pairs = list(layers) if layers is not None else [last_layers(ctx)]
    s_layers, t_layers = [s for s, _ in pairs], [t for _, t in pairs]
    with_teacher_logits = params.kd_weight > 0

    def loss(batch) -> torch.Tensor:
        with torch.no_grad():
            t_out = teacher(batch.inputs, layers=t_layers, mask=batch.mask, with_logits=with_teacher_logits)
        s_out = student(batch.inputs, layers=s_layers, mask=batch.mask)
        s_samples = [samples(h, batch.mask, how).float() for h in s_out.hidden]
        if len(s_samples[0]) < min_samples:
            raise UserError(f"{name}: relates the samples of a batch to each other, and this batch has "
                            f"{len(s_samples[0])} ({how} representation): student.batch_size must be at least "
                            f"{min_samples}")
        total = relation(s_samples, [samples(h, batch.mask, how).float() for h in t_out.hidden])
        if params.ce_weight > 0:
            total = total + params.ce_weight * F.cross_entropy(s_out.logits.float(), batch.labels)
        if with_teacher_logits:
            total = total + params.kd_weight * soft_cross_entropy(s_out.logits, t_out.logits, params.temperature)
        return total

    trained = [*student.parameters(), *extra] if extra else None
    return Phase(name, loss=loss, params=trained, teacher="final", depth=student.num_layers, state=state,
                 info={"representation": how, "student_layers": s_layers, "teacher_layers": t_layers,
                       **(info or {})})
