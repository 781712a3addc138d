"""What online and pro-kd share: a teacher co-trained in lockstep with the student.

:class:`LockstepParams` declares the params both offer (``every``, ``refresh``,
``label_weight``); :class:`LockstepMethod` makes the phases from them: the student follows
a frozen copy of the co-trained teacher (:func:`kdbench.losses.cotrained_teacher`) with the
subclass's ``follow`` loss while the teacher trains, then distils from the final teacher
(:func:`kdbench.losses.lockstep_phases`) with the loss options ``params.final_options()``.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
from pydantic import Field
from torch import nn

from kdbench.api import Batch, Method, MethodContext, Phase
from kdbench.distill_options import BasicDistillOptions, LabelWeight
from kdbench.losses import cotrained_teacher, lockstep_phases


class LockstepParams(LabelWeight):
    """The params of a method with a teacher trained in lockstep: its cadence and the label weight."""

    every: int = Field(1, ge=1, description="student steps per teacher step")
    refresh: int = Field(1, ge=1, description="teacher steps between refreshes of the student's target")

    def final_options(self) -> BasicDistillOptions:
        """The loss options of the final-teacher phase (a subclass says which)."""
        raise NotImplementedError


class LockstepMethod(Method):
    """Follow a teacher trained in lockstep (the loss :meth:`follow`, phase ``follow_phase``),
    then distil from the final teacher. A subclass sets ``follow_phase`` and ``Params`` (a
    :class:`LockstepParams`) and writes :meth:`follow`."""

    Params = LockstepParams
    needs_teacher = False  # it trains its own, inside the run
    follow_phase: ClassVar[str]

    def follow(self, ctx: MethodContext, params: LockstepParams,
               target: nn.Module) -> Callable[[Batch], torch.Tensor]:
        """The loss while the teacher trains; ``target`` is the frozen, refreshed copy the student reads."""
        raise NotImplementedError

    def phases(self, ctx: MethodContext, params: LockstepParams) -> list[Phase]:
        """The follow phase while the teacher trains, then the final teacher."""
        cotrain = cotrained_teacher(ctx, params.every, params.refresh)
        return lockstep_phases(ctx, cotrain, self.follow_phase, self.follow(ctx, params, cotrain.target),
                               options=params.final_options())
