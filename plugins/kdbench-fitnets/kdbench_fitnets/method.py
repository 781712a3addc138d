"""FitNets hint training (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets").

Phase ``hint``: a learned linear regressor maps the student's guided layer onto
the teacher's hint layer; the loss is the MSE between the two. Only the student
layers up to the guided one and the regressor train, and only those layers (and
the teacher's layers up to the hint) run, so these steps cost what they
compute. Phase ``logits``: the whole student distils the final teacher's
logits (soft cross-entropy at a temperature), as in one-shot distillation.

Representations are ``[batch, hidden]`` for an MLP and ``[batch, tokens, hidden]``
for an encoder; the regressor is an ``nn.Linear`` on the last dimension, so the
MSE covers every token position.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kdbench import BasicDistillOptions, Method, MethodContext, Phase, UserError, final_teacher_phase


class FitNetsParams(BasicDistillOptions):
    """Where the hint goes, how much of the budget it gets, and the logits phase (``temperature``
    and ``label_weight``, from :class:`kdbench.BasicDistillOptions`)."""

    student_layer: Optional[int] = Field(
        None, ge=1, description="guided student layer (default: the middle one, ceil(student layers / 2))")
    teacher_layer: Optional[int] = Field(
        None, ge=1, description="hint teacher layer (default: the same relative depth, "
                                "ceil(student_layer * teacher layers / student layers))")
    hint_share: float = Field(0.3, gt=0, lt=1, description="share of the FLOP budget spent on the hint phase")
    pre_activation: bool = Field(False, description="match both layers' outputs before their nonlinearity")
    regressor_init: Literal["xavier", "kaiming", "orthogonal"] = Field(
        "xavier", description="initialisation of the regressor's weight (its bias starts at 0)")


def hint_layers(params: FitNetsParams, student: nn.Module, teacher: nn.Module) -> tuple[int, int]:
    """The (student, teacher) layers the hint connects, defaults resolved and ranges checked."""
    s_layers, t_layers = student.num_layers, teacher.num_layers
    s = params.student_layer if params.student_layer is not None else math.ceil(s_layers / 2)
    t = params.teacher_layer if params.teacher_layer is not None else math.ceil(s * t_layers / s_layers)
    if not 1 <= s <= s_layers:
        raise UserError(f"fitnets: params.student_layer: {s} is out of range; this task's student has layers "
                        f"1..{s_layers}")
    if not 1 <= t <= t_layers:
        raise UserError(f"fitnets: params.teacher_layer: {t} is out of range; this task's teacher has layers "
                        f"1..{t_layers}")
    return s, t


def make_regressor(in_features: int, out_features: int, init: str, generator: torch.Generator,
                   device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Linear:
    """``nn.Linear(in, out)`` initialised from ``generator`` only (the global RNG is untouched)."""
    regressor = nn.Linear(in_features, out_features, device="meta").to_empty(device="cpu")
    weight = regressor.weight.data
    if init == "xavier":
        nn.init.xavier_uniform_(weight, generator=generator)
    elif init == "kaiming":  # nn.Linear's own default
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    else:
        nn.init.orthogonal_(weight, generator=generator)
    nn.init.zeros_(regressor.bias.data)
    return regressor.to(device=device, dtype=dtype)


class FitNets(Method):
    """Hint training of a middle layer through a learned regressor, then logit distillation."""

    name = "fitnets"
    version = "2"  # 2: the regressor is drawn from the method's own random stream (kdbench.streams)
    Params = FitNetsParams
    description = "hint: regress the student's middle layer onto the teacher's (MSE), then logits (Romero et al. 2015)"

    def phases(self, ctx: MethodContext, params: FitNetsParams) -> list[Phase]:
        student, teacher = ctx.student, ctx.teacher.final()
        s_layer, t_layer = hint_layers(params, student, teacher)
        dtype = next(student.parameters()).dtype
        regressor = make_regressor(student.hidden_size(s_layer), teacher.hidden_size(t_layer), params.regressor_init,
                                   ctx.generator, ctx.device, dtype)
        pre = params.pre_activation

        def hint_loss(batch):
            with torch.no_grad():
                target = teacher(batch.inputs, upto=t_layer, pre_activation=pre)
            guided = student(batch.inputs, upto=s_layer, pre_activation=pre)
            return F.mse_loss(regressor(guided).float(), target.float())

        trained = [p for layer in range(1, s_layer + 1) for p in student.layer_parameters(layer)]
        trained += list(regressor.parameters())
        return [
            Phase("hint", loss=hint_loss, share=params.hint_share, params=trained, teacher="final", depth=s_layer,
                  info={"student_layer": s_layer, "teacher_layer": t_layer}),
            final_teacher_phase(ctx, name="logits", options=params),
        ]
