"""The params of the distillation loss, declared once and shared by every method that distils logits.

Each param is a field of exactly one class here; a method's ``Params`` subclasses the piece
it offers:

- :class:`LabelWeight`: ``label_weight``, the share of the true-label cross-entropy;
- :class:`Temperature`: ``temperature`` (> 0), the softmax temperature of teacher and student;
- :class:`BasicDistillOptions`: both, at a fixed temperature and forward KL (online, fitnets,
  curriculum extraction's logit phase);
- :class:`DistillOptions`: all of the loss's options (one-shot, progressive): temperature 0
  (hard teacher labels), forward or reverse KL, and schedules of temperature and label weight
  over the run that follow the engine's :class:`~kdbench.api.Clock`.

A phase reads any of them through :meth:`BasicDistillOptions.loss_at` (see
:func:`kdbench.losses.distill_phase`).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, Optional

from pydantic import Field, model_validator

from kdbench.api import Params, new_param

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


class LossSettings(NamedTuple):
    """The distillation loss's settings at one step: what :func:`kdbench.losses.distillation_loss` takes."""

    temperature: float
    label_weight: float
    divergence: str


class LabelWeight(Params):
    """``label_weight``: the weight of the true-label cross-entropy mixed into a distillation loss."""

    label_weight: float = Field(0.0, ge=0, le=1, description="weight of the true-label cross-entropy")


class Temperature(Params):
    """``temperature`` (> 0): the softmax temperature of teacher and student."""

    temperature: float = Field(1.0, gt=0, description="softmax temperature of teacher and student")


class BasicDistillOptions(LabelWeight, Temperature):
    """The distillation loss at a fixed ``temperature`` (> 0) and ``label_weight``, forward KL:
    ``(1 - w) * KL(teacher || student; T) * T^2 + w * cross_entropy(labels)``.

    A method's ``Params`` subclasses it to offer these two params; :class:`DistillOptions`
    adds hard labels (temperature 0), reverse KL and schedules."""

    @property
    def scheduled(self) -> bool:
        """Whether the settings change over the run (then a phase needs the run's clock)."""
        return False

    def loss_at(self, fraction: float) -> LossSettings:
        """The loss's settings after ``fraction`` (0..1) of the run."""
        return LossSettings(self.temperature, self.label_weight, "forward")


class DistillOptions(BasicDistillOptions):
    """The distillation loss's params: what a method's ``Params`` subclasses to offer them all.

    At run fraction ``f = clock.step / clock.total_steps`` the loss is
    ``(1 - w) * D(teacher, student; T) + w * cross_entropy(labels)`` with ``T`` and ``w``
    going from ``temperature`` / ``label_weight`` (f = 0) to ``temperature_end`` /
    ``label_weight_end`` (f = 1) by their schedules. ``D`` is ``forward`` KL (teacher ||
    student, Hinton's) or ``reverse`` KL (student || teacher), times T^2; at ``temperature: 0``
    it is the cross-entropy of the student on the teacher's argmax (hard labels).
    """

    # the one bound that differs from the base's: 0 is allowed here (hard teacher labels)
    temperature: float = Field(1.0, ge=0, description="softmax temperature of teacher and student; 0: the student "
                                                       "trains with cross-entropy on the teacher's argmax")
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

    @property
    def scheduled(self) -> bool:
        """Whether temperature or label weight follows a schedule other than ``constant``."""
        return (self.temperature_schedule, self.label_weight_schedule) != ("constant", "constant")

    def settings_at(self, fraction: float) -> tuple[float, float]:
        """``(temperature, label_weight)`` after ``fraction`` (0..1) of the run."""
        return (interpolate(fraction, self.temperature, self.temperature_end, self.temperature_schedule),
                interpolate(fraction, self.label_weight, self.label_weight_end, self.label_weight_schedule))

    def loss_at(self, fraction: float) -> LossSettings:
        """The loss's settings after ``fraction`` (0..1) of the run: the schedules' values and the divergence."""
        return LossSettings(*self.settings_at(fraction), self.divergence)
