"""CTKD: Li, Li, Yang, Zhang, Zhao, Song, Yang, Cheng and Wang (2023), "Curriculum Temperature for
Knowledge Distillation", AAAI 2023.

The distillation temperature is learned adversarially: a temperature module predicts ``tau`` and
trains through a gradient reversal layer (GRL: identity forward, ``-lambda`` times the gradient
backward), so one optimizer step lowers the student's loss and *raises* the loss with respect to
``tau`` (the min-max of Eq. 5). ``lambda`` follows the easy-to-hard curriculum of Eq. 7, a cosine
rise from ``lambda_min`` to ``lambda_max`` over the first ``lambda_rise`` of the run:
``lambda = lambda_min + 1/2 (lambda_max - lambda_min) (1 + cos((1 + min(f / lambda_rise, 1)) pi))``.
The module is the global one (a single learnable scalar, the authors' default) or the
instance-wise one (a two-layer MLP on the teacher's and student's logits, one ``tau`` per row);
its output goes through ``tau = t_start + t_range * sigmoid(theta)`` (the authors' code: 1 + 20
sigmoid). The loss is ``ce_weight * CE + kd_weight * tau^2 * KL(p^T_tau || p^S_tau)`` with the
authors' CIFAR-100 weights 0.1 and 0.9.

In kdbench the module's parameters are trained by the phase (listed in its ``params``, stepped by
the run's optimizer) and its forward and backward are part of the phase's loss, so the FLOP
counter charges them: nothing for the global scalar (no matmul), the MLP's matmuls for the
instance-wise module. Its inputs are the logits, detached: the student is not trained through
the temperature's prediction. The module starts at ``theta = 1`` (global) or a seeded
initialisation from the run's generator (instance-wise).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kdbench import Method, Params, Phase

from kdbench_zoo.logit.common import logit_pair, num_classes


class CTKDParams(Params):
    """The temperature module, its range, the curriculum of the reversal strength and the loss weights."""

    module: Literal["global", "instance"] = Field(
        "global", description="global: one learnable temperature; instance: a 2-layer MLP predicting one per row")
    hidden: int = Field(256, ge=1, description="hidden width of the instance-wise module's MLP")
    t_start: float = Field(1.0, gt=0, description="the lowest temperature: tau = t_start + t_range * sigmoid(theta)")
    t_range: float = Field(20.0, gt=0, description="the span of temperatures above t_start")
    lambda_min: float = Field(0.0, ge=0, description="reversal strength at the start of the curriculum")
    lambda_max: float = Field(1.0, ge=0, description="reversal strength at its end")
    lambda_rise: float = Field(10 / 240, gt=0, le=1, description="fraction of the run over which lambda rises "
                                                                 "(paper: 10 of 240 epochs)")
    ce_weight: float = Field(0.1, ge=0, description="weight of the true-label cross-entropy")
    kd_weight: float = Field(0.9, ge=0, description="weight of the KL at the learned temperature")


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times ``-strength`` backward."""

    @staticmethod
    def forward(ctx, x, strength):
        """Keep ``strength`` for the backward pass; return ``x`` unchanged."""
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        """Reverse and scale the gradient of ``x``; none for ``strength``."""
        return -ctx.strength * grad, None


def reversal_strength(fraction: float, params: CTKDParams) -> float:
    """``lambda`` after ``fraction`` of the run: the cosine rise of Eq. 7, then ``lambda_max``."""
    done = min(fraction / params.lambda_rise, 1.0)
    return params.lambda_min + 0.5 * (params.lambda_max - params.lambda_min) * (1 + math.cos((1 + done) * math.pi))


class GlobalTemperature(nn.Module):
    """One learnable ``theta`` for every row (CTKD's global temperature), starting at 1 as the authors' does."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.ones(1))

    def forward(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        """``theta`` as a ``[1, 1]`` tensor (it broadcasts over the rows)."""
        return self.theta.view(1, 1)


class InstanceTemperature(nn.Module):
    """A ``theta`` per row from a two-layer MLP on the concatenated teacher and (detached) student logits."""

    def __init__(self, classes: int, hidden: int, generator: torch.Generator):
        super().__init__()
        layers = [nn.Linear(2 * classes, hidden, device="meta"), nn.ReLU(), nn.Linear(hidden, 1, device="meta")]
        self.mlp = nn.Sequential(*layers).to_empty(device="cpu")  # no draw from the global RNG
        with torch.no_grad():
            for layer in (self.mlp[0], self.mlp[2]):
                bound = 1 / math.sqrt(layer.in_features)  # torch's default Linear bounds, from the run's stream
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        """``theta`` as a ``[rows, 1]`` tensor."""
        return self.mlp(torch.cat([teacher_logits, student_logits.detach()], -1))


class CTKD(Method):
    """KD at a temperature learned adversarially through gradient reversal, with a cosine curriculum."""

    name = "ctkd"
    version = "1"
    Params = CTKDParams
    description = "KD at an adversarially learned temperature with a curriculum (Li et al. 2023)"

    def phases(self, ctx, params):
        student, teacher, clock = ctx.student, ctx.teacher.final(), ctx.clock
        module = (GlobalTemperature() if params.module == "global"
                  else InstanceTemperature(num_classes(ctx), params.hidden, ctx.generator)).to(ctx.device)

        def loss(batch):
            s, target = logit_pair(student, teacher, batch)
            strength = reversal_strength(clock.step / max(1, clock.total_steps), params)
            theta = GradientReversal.apply(module(target, s), strength)
            tau = params.t_start + params.t_range * torch.sigmoid(theta)
            kl = (F.softmax(target / tau, -1) * (F.log_softmax(target / tau, -1) - F.log_softmax(s / tau, -1))).sum(-1)
            kd = (kl * tau.view(-1) ** 2).mean()
            return params.ce_weight * F.cross_entropy(s, batch.labels) + params.kd_weight * kd

        trained = list(student.parameters()) + list(module.parameters())
        return [Phase("ctkd", loss=loss, params=trained, teacher="final", info={"module": params.module})]
