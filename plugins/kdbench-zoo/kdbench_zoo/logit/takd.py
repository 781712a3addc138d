"""TAKD: Mirzadeh, Farajtabar, Li, Levine, Matsukawa and Ghasemzadeh (2020), "Improved Knowledge
Distillation via Teacher Assistant", AAAI 2020.

When the gap between teacher and student is large, distil in two steps (Section 3): a teacher
assistant (TA) of intermediate size is distilled from the teacher, then the student from the TA,
each with the KD loss ``(1 - lambda) * CE + lambda * T^2 * KL(p^T_T || p^S_T)`` (Eq. 1-3), here
one-shot's ``temperature`` and ``label_weight`` (``lambda = 1 - label_weight``). The paper
finds a TA of middle size works best; kdbench builds it by interpolating the student's and the
teacher's sizes (``assistant_size`` of the way from student to teacher: hidden widths for an MLP;
width, rounded to a multiple of the student's heads, and depth for an encoder), initialised from
the run's random stream.

The TA's training is part of the run's cost: the first phase trains only the assistant (its
forward and backward, and the teacher's forward, are measured and charged like any phase) with
``assistant_share`` of the run's FLOP budget; the student phase takes the rest. The phase's
``info`` records the assistant's shape and parameter count. The paper trains TA and student for
the same number of epochs; a share of 0.5 (the default) gives them the same FLOPs instead, so the
larger TA takes fewer steps than the student. Only kdbench's own MLP and Encoder models can be
interpolated; another model (a Hugging Face adapter) is refused.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from kdbench import MLP, BasicDistillOptions, Encoder, Method, Phase, UserError, distillation_loss, logits


class TAKDParams(BasicDistillOptions):
    """The assistant's size and budget share, and one-shot's temperature and label weight (both steps)."""

    assistant_size: float = Field(0.5, gt=0, lt=1, description="where the assistant's size lies from the student "
                                                               "(0) to the teacher (1)")
    assistant_share: float = Field(0.5, gt=0, lt=1, description="share of the run's FLOP budget that trains the "
                                                                "assistant")


def between(low: int, high: int, fraction: float, multiple: int = 1) -> int:
    """``low + fraction * (high - low)`` rounded to a positive multiple of ``multiple``."""
    return max(multiple, round((low + fraction * (high - low)) / multiple) * multiple)


def assistant_config(student: nn.Module, teacher: nn.Module, size: float) -> dict:
    """The constructor arguments of an assistant ``size`` of the way from ``student`` to ``teacher``."""
    cfg, top = dict(student.config), teacher.config
    if isinstance(student, MLP):
        low, high = cfg["hidden"], top["hidden"]
        if isinstance(low, int) != isinstance(high, int) or (isinstance(low, list) and len(low) != len(high)):
            raise UserError(f"takd: teacher and student MLPs differ in depth ({high} vs {low} hidden widths): "
                            "an assistant between them is not defined")
        cfg["hidden"] = between(low, high, size) if isinstance(low, int) else [
            between(s, t, size) for s, t in zip(low, high)]
    else:
        cfg["width"] = between(cfg["width"], top["width"], size, multiple=cfg["heads"])
        cfg["layers"] = between(cfg["layers"], top["layers"], size)
    return cfg


def build_assistant(ctx, size: float) -> nn.Module:
    """A freshly initialised assistant on ``ctx.device``, seeded from ``ctx.generator`` (global RNG restored)."""
    student, teacher = ctx.student, ctx.teacher.final()
    if not any(isinstance(student, kind) and isinstance(teacher, kind) for kind in (MLP, Encoder)):
        raise UserError(f"takd: builds its assistant between kdbench.MLP or kdbench.Encoder models; this task's "
                        f"student is {type(student).__name__} and its teacher {type(teacher).__name__}")
    cfg = assistant_config(student, teacher, size)
    seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=ctx.generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        assistant = type(student)(**cfg)
    return assistant.to(ctx.device)


def kd_loss(learner: nn.Module, source: nn.Module, params: TAKDParams):
    """``loss(batch)``: one-shot's loss of ``learner`` against ``source``'s logits (without gradient)."""

    def loss(batch):
        with torch.no_grad():
            target = logits(source, batch)
        return distillation_loss(logits(learner, batch), target, batch.labels, params.temperature,
                                 params.label_weight)

    return loss


class TAKD(Method):
    """Distil an intermediate-size assistant from the teacher, then the student from the assistant."""

    name = "takd"
    version = "1"
    Params = TAKDParams
    description = "teacher -> mid-size assistant -> student, the assistant in the budget (Mirzadeh et al. 2020)"

    def phases(self, ctx, params):
        assistant = build_assistant(ctx, params.assistant_size)
        weights = list(assistant.parameters())
        info = {"assistant": assistant.config, "assistant_parameters": sum(p.numel() for p in weights),
                "student_parameters": sum(p.numel() for p in ctx.student.parameters())}
        return [Phase("assistant", loss=kd_loss(assistant, ctx.teacher.final(), params), share=params.assistant_share,
                      params=weights, teacher="final", info=info),
                Phase("student", loss=kd_loss(ctx.student, assistant, params), teacher="assistant")]
