"""Losses and phases shared by distillation methods (public: a method plugin may use them).

The loss's params are :class:`~kdbench.distill_options.DistillOptions` and its smaller bases
(:mod:`kdbench.distill_options`, re-exported here). A phase that distils logits takes them as
``options``: :func:`distill_phase` and :func:`final_teacher_phase`; :func:`cotrained_teacher`
and :func:`lockstep_phases` make online distillation's teacher and phases.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.api import Batch, Clock, CoTrain, MethodContext, Phase, logits
from kdbench.distill_options import BasicDistillOptions, DistillOptions, interpolate

__all__ = ["BasicDistillOptions", "DistillOptions", "interpolate", "soft_cross_entropy", "reverse_kl", "generalised_jsd",
           "distillation_loss", "teacher_loss", "distill_phase", "final_teacher_phase", "cotrained_teacher",
           "lockstep_phases"]


def _kl_batchmean(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) from log-probabilities, summed over all but the first dimension and averaged over
    it: ``F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")`` written out, bit for bit
    (the same operations), because vmap has a batching rule for these and none for kl_div."""
    return (log_p.exp() * (log_p - log_q)).sum() / log_q.size(0)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """Hinton et al.'s distillation loss: KL(teacher || student) at ``temperature``, times T^2.

    Same gradients as the soft cross-entropy; zero when the student matches. The
    T^2 factor keeps gradient size comparable across temperatures.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return _kl_batchmean(log_p_teacher, log_p_student) * (t * t)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(student || teacher) at ``temperature``, times T^2: zero when the student matches; unlike
    the forward KL it pays little for classes the student leaves out (mode-seeking)."""
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return _kl_batchmean(log_p_student, log_p_teacher) * (t * t)


def generalised_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                    reduction: str = "mean") -> torch.Tensor:
    """The generalised Jensen-Shannon divergence of Agarwal et al. (2024, GKD, Eq. 2) between the
    teacher's distribution ``P`` and the student's ``Q``, per row of logits ``[..., classes]``:

        JSD(beta)(P || Q) = beta * KL(P || M) + (1 - beta) * KL(Q || M),   M = beta * P + (1 - beta) * Q

    ``beta`` in (0, 1); 0.5 is the Jensen-Shannon divergence (symmetric, at most log 2). The mixture is
    formed in log space (a log-sum-exp), so no probability is rounded to log 0. The logits are used as
    given (divide by a temperature, convert to float32 first if wanted). ``reduction``: ``"mean"`` over
    rows (a scalar) or ``"none"`` (one value per row)."""
    if not 0 < beta < 1:
        raise ValueError(f"generalised_jsd: beta must be in (0, 1), got {beta}")
    log_p, log_q = F.log_softmax(teacher_logits, -1), F.log_softmax(student_logits, -1)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))
    rows = beta * _kl_rows(log_p, log_m) + (1 - beta) * _kl_rows(log_q, log_m)
    if reduction == "none":
        return rows
    if reduction == "mean":
        return rows.mean()
    raise ValueError(f"generalised_jsd: reduction must be 'mean' or 'none', got {reduction!r}")


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-row KL(p || q) from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float = 1.0, label_weight: float = 0.0,
                      divergence: str = "forward") -> torch.Tensor:
    """``(1 - label_weight) * D + label_weight * cross_entropy(labels)``, where ``D`` is
    :func:`soft_cross_entropy` (``divergence="forward"``) or :func:`reverse_kl` at ``temperature``,
    or at ``temperature=0`` the cross-entropy of the student on the teacher's argmax."""
    if temperature == 0:
        if divergence != "forward":
            raise ValueError("temperature 0 (hard teacher labels) has no reverse divergence")
        loss = F.cross_entropy(student_logits.float(), teacher_logits.argmax(dim=-1))
    elif divergence == "reverse":
        loss = reverse_kl(student_logits, teacher_logits, temperature)
    elif divergence == "forward":
        loss = soft_cross_entropy(student_logits, teacher_logits, temperature)
    else:
        raise ValueError(f"unknown divergence {divergence!r}; allowed: forward, reverse")
    if label_weight > 0:
        loss = (1 - label_weight) * loss + label_weight * F.cross_entropy(student_logits.float(), labels)
    return loss


def teacher_loss(student: nn.Module, teacher_fn: Callable[[], nn.Module], options: BasicDistillOptions,
                 clock: Optional[Clock] = None) -> Callable[[Batch], torch.Tensor]:
    """``loss(batch)``: :func:`distillation_loss` of ``student`` against the logits of ``teacher_fn()``
    (called at every step, without gradient) with the settings of ``options`` at the run's
    fraction; a schedule (``options.scheduled``) follows ``clock`` (``ctx.clock``), then needed."""
    if options.scheduled and clock is None:
        raise ValueError("a temperature or label-weight schedule needs the run's clock")
    fixed = None if options.scheduled else options.loss_at(0.0)

    def loss(batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            target = logits(teacher_fn(), batch)
        settings = fixed or options.loss_at(clock.step / max(1, clock.total_steps))
        return distillation_loss(logits(student, batch), target, batch.labels, *settings)

    return loss


def _options(caller: str, options: Optional[BasicDistillOptions], temperature: Optional[float],
             label_weight: Optional[float], floats: str = "temperature, label_weight") -> BasicDistillOptions:
    """``options``, or :class:`DistillOptions` of the old calling style's floats (with a DeprecationWarning)."""
    if temperature is not None or label_weight is not None:
        warnings.warn(f"{caller}(..., {floats}) is deprecated: pass "
                      "options=kdbench.DistillOptions(temperature=..., label_weight=...) (or the method's params, "
                      "a kdbench.BasicDistillOptions or DistillOptions)", DeprecationWarning, stacklevel=3)
        if options is None:  # as before: given options replace the floats
            return DistillOptions(temperature=1.0 if temperature is None else temperature,
                                  label_weight=0.0 if label_weight is None else label_weight)
    return options if options is not None else DistillOptions()


def distill_phase(name: str, student: nn.Module, teacher_fn: Callable[[], nn.Module],
                  temperature: Optional[float] = None, label_weight: Optional[float] = None, *,
                  options: Optional[BasicDistillOptions] = None, clock: Optional[Clock] = None,
                  **phase_fields) -> Phase:
    """A :class:`Phase` in which ``student`` matches the logits of ``teacher_fn()`` with
    :func:`distillation_loss` (see :func:`teacher_loss`). ``teacher_fn`` is called at every step,
    so a checkpoint loads only when its phase runs. ``options`` are the loss's params (a
    :class:`BasicDistillOptions` or :class:`DistillOptions`, e.g. the method's params; default:
    temperature 1, no labels); their schedules follow ``clock`` (the run's, ``ctx.clock``), needed
    when a schedule is not constant. ``phase_fields`` are the Phase's other fields (share, steps, ...).

    ``temperature`` and ``label_weight`` as floats are the old calling style, deprecated (a
    DeprecationWarning): pass ``options=DistillOptions(temperature=..., label_weight=...)``.
    (Two of the arguments are those kdbench 0.1 positional floats, kept for one minor version.)"""
    options = _options("distill_phase", options, temperature, label_weight)
    if options.scheduled and clock is None:
        raise ValueError(f"phase {name!r}: a temperature or label-weight schedule needs the run's clock")
    return Phase(name, loss=teacher_loss(student, teacher_fn, options, clock), **phase_fields)


def final_teacher_phase(ctx: MethodContext, temperature: Optional[float] = None, label_weight: Optional[float] = None,
                        name: str = "final-teacher", *, options: Optional[BasicDistillOptions] = None,
                        **phase_fields) -> Phase:
    """A phase distilling ``ctx.student`` from the final teacher's logits with the loss ``options``
    (see :func:`distill_phase`): one-shot distillation, and the last phase of most other methods.
    ``temperature`` and ``label_weight`` as floats are deprecated, as in :func:`distill_phase`."""
    options = _options("final_teacher_phase", options, temperature, label_weight)
    return distill_phase(name, ctx.student, ctx.teacher.final, options=options, clock=ctx.clock, teacher="final",
                         **phase_fields)


def cotrained_teacher(ctx: MethodContext, every: int = 1, refresh: int = 1) -> CoTrain:
    """A fresh teacher trained on labels by its recipe inside the run, with a frozen target copy."""
    teacher = ctx.make_teacher()
    teacher.train()
    target = copy.deepcopy(teacher)
    target.eval()
    for p in target.parameters():
        p.requires_grad_(False)
    return CoTrain(model=teacher, loss=lambda b: F.cross_entropy(logits(teacher, b), b.labels),
                   recipe=ctx.teacher_recipe, every=every, target=target, refresh=refresh)


def lockstep_phases(ctx: MethodContext, cotrain: CoTrain, name: str, follow: Callable,
                    final_temperature: Optional[float] = None, label_weight: Optional[float] = None, *,
                    options: Optional[BasicDistillOptions] = None) -> list[Phase]:
    """``follow`` (a loss reading ``cotrain.target``) while the teacher trains, then the final
    teacher with the loss ``options`` (see :func:`distill_phase`; ``final_temperature`` and
    ``label_weight`` as floats are deprecated)."""
    options = _options("lockstep_phases", options, final_temperature, label_weight, "final_temperature, label_weight")
    target = cotrain.target
    return [
        Phase(name, loss=follow, steps=cotrain.every * cotrain.total_steps, teacher="co-trained",
              cotrain=cotrain, cost_key="distill"),
        distill_phase("final-teacher", ctx.student, lambda: target, options=options, clock=ctx.clock,
                      teacher="final (co-trained)", cost_key="distill"),
    ]
