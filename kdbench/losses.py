"""Losses and phases shared by distillation methods (public: a method plugin may use them).

:class:`DistillOptions` are the params of the distillation loss that one-shot and
progressive share (a method's ``Params`` may subclass it): temperature (0: hard
teacher labels), label weight, forward or reverse KL, and schedules of temperature
and label weight over the run that follow the engine's :class:`~kdbench.api.Clock`.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from kdbench.api import Clock, CoTrain, MethodContext, Params, Phase, logits, new_param

Shape = Literal["constant", "linear", "cosine"]


def interpolate(fraction: float, start: float, end: float, shape: str) -> float:
    """A schedule's value after ``fraction`` (0..1, clipped) of its span, from ``start`` to ``end``:
    ``constant`` (start), ``linear``, ``cosine`` (half a cosine) or ``exponential`` (geometric)."""
    f = min(max(fraction, 0.0), 1.0)
    if shape == "constant":
        return start
    if shape == "linear":
        return start + (end - start) * f
    if shape == "cosine":
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * f))
    if shape == "exponential":
        return start * (end / start) ** f
    raise ValueError(f"unknown schedule shape {shape!r}; allowed: constant, linear, cosine, exponential")


class DistillOptions(Params):
    """The distillation loss's params: what a method's ``Params`` subclasses to offer them all.

    At run fraction ``f = clock.step / clock.total_steps`` the loss is
    ``(1 - w) * D(teacher, student; T) + w * cross_entropy(labels)`` with ``T`` and ``w``
    going from ``temperature`` / ``label_weight`` (f = 0) to ``temperature_end`` /
    ``label_weight_end`` (f = 1) by their schedules. ``D`` is ``forward`` KL (teacher ||
    student, Hinton's) or ``reverse`` KL (student || teacher), times T^2; at ``temperature: 0``
    it is the cross-entropy of the student on the teacher's argmax (hard labels).
    """

    temperature: float = Field(1.0, ge=0, description="softmax temperature of teacher and student; 0: the student "
                                                       "trains with cross-entropy on the teacher's argmax")
    label_weight: float = Field(0.0, ge=0, le=1, description="weight of the true-label cross-entropy")
    divergence: Literal["forward", "reverse"] = new_param(
        "forward", description="forward: KL(teacher || student) (Hinton et al.); reverse: KL(student || teacher)")
    temperature_end: Optional[float] = new_param(
        None, gt=0, description="temperature at the end of the run (with temperature_schedule linear or cosine)")
    temperature_schedule: Shape = new_param(
        "constant", description="temperature from `temperature` to `temperature_end` over the run's steps")
    label_weight_end: Optional[float] = new_param(
        None, ge=0, le=1, description="label weight at the end of the run (with label_weight_schedule linear or cosine)")
    label_weight_schedule: Shape = new_param(
        "constant", description="label weight from `label_weight` to `label_weight_end` over the run's steps")

    @model_validator(mode="after")
    def _consistent_loss(self):
        for name in ("temperature", "label_weight"):
            end, shape = getattr(self, f"{name}_end"), getattr(self, f"{name}_schedule")
            if shape == "constant" and end is not None:
                raise ValueError(f"{name}_end needs {name}_schedule linear or cosine (it is constant)")
            if shape != "constant" and end is None:
                raise ValueError(f"{name}_schedule {shape} needs {name}_end (the value at the end of the run)")
        if self.temperature == 0 and self.divergence == "reverse":
            raise ValueError("divergence: reverse needs temperature > 0 (temperature 0 trains on the teacher's "
                             "argmax: there is no teacher distribution to reverse)")
        if self.temperature == 0 and self.temperature_schedule != "constant":
            raise ValueError("temperature_schedule needs temperature > 0 (temperature 0: hard teacher labels)")
        return self

    def settings_at(self, fraction: float) -> tuple[float, float]:
        """``(temperature, label_weight)`` after ``fraction`` (0..1) of the run."""
        return (interpolate(fraction, self.temperature, self.temperature_end, self.temperature_schedule),
                interpolate(fraction, self.label_weight, self.label_weight_end, self.label_weight_schedule))


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """Hinton et al.'s distillation loss: KL(teacher || student) at ``temperature``, times T^2.

    Same gradients as the soft cross-entropy; zero when the student matches. The
    T^2 factor keeps gradient size comparable across temperatures.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * (t * t)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(student || teacher) at ``temperature``, times T^2: zero when the student matches; unlike
    the forward KL it pays little for classes the student leaves out (mode-seeking)."""
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_teacher, log_p_student, log_target=True, reduction="batchmean") * (t * t)


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


def distill_phase(name: str, student: nn.Module, teacher_fn: Callable[[], nn.Module], temperature: float = 1.0,
                  label_weight: float = 0.0, *, options: Optional[DistillOptions] = None, clock: Optional[Clock] = None,
                  **phase_fields) -> Phase:
    """A :class:`Phase` in which ``student`` matches the logits of ``teacher_fn()`` with
    :func:`distillation_loss`. ``teacher_fn`` is called at every step, so a checkpoint loads
    only when its phase runs. ``options`` (:class:`DistillOptions`, e.g. the method's params)
    replace ``temperature`` and ``label_weight``; their schedules follow ``clock`` (the run's,
    ``ctx.clock``), needed when a schedule is not constant. ``phase_fields`` are the Phase's
    other fields (share, steps, ...)."""
    options = options or DistillOptions(temperature=temperature, label_weight=label_weight)
    scheduled = (options.temperature_schedule, options.label_weight_schedule) != ("constant", "constant")
    if scheduled and clock is None:
        raise ValueError(f"phase {name!r}: a temperature or label-weight schedule needs the run's clock")
    fixed = None if scheduled else options.settings_at(0.0)

    def loss(batch):
        with torch.no_grad():
            target = logits(teacher_fn(), batch)
        temperature_now, label_weight_now = fixed or options.settings_at(clock.step / max(1, clock.total_steps))
        return distillation_loss(logits(student, batch), target, batch.labels, temperature_now, label_weight_now,
                                 options.divergence)

    return Phase(name, loss=loss, **phase_fields)


def final_teacher_phase(ctx: MethodContext, temperature: float = 1.0, label_weight: float = 0.0,
                        name: str = "final-teacher", *, options: Optional[DistillOptions] = None,
                        **phase_fields) -> Phase:
    """A phase distilling ``ctx.student`` from the final teacher's logits: one-shot distillation,
    and the last phase of most other methods. ``options``, if given, replace ``temperature`` and
    ``label_weight`` (see :func:`distill_phase`)."""
    return distill_phase(name, ctx.student, ctx.teacher.final, temperature, label_weight, options=options,
                         clock=ctx.clock, teacher="final", **phase_fields)


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


def lockstep_phases(ctx: MethodContext, cotrain: CoTrain, name: str, follow: Callable, final_temperature: float = 1.0,
                    label_weight: float = 0.0) -> list[Phase]:
    """``follow`` (a loss reading ``cotrain.target``) while the teacher trains, then the final teacher."""
    target = cotrain.target
    return [
        Phase(name, loss=follow, steps=cotrain.every * cotrain.total_steps, teacher="co-trained",
              cotrain=cotrain, cost_key="distill"),
        distill_phase("final-teacher", ctx.student, lambda: target, final_temperature, label_weight,
                      teacher="final (co-trained)", cost_key="distill"),
    ]
