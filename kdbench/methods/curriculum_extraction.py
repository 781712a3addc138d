"""Curriculum extraction (Gupta & Karmalkar 2025): a curriculum from the final teacher only.

Stage i aligns the student's representation after layer ``l_i`` (MSE) with a
fixed random projection of the teacher's representation after its layer
``m(l_i)``; only layers up to those run, so these steps cost less and the engine
charges what ran. A last phase distils from the teacher's logits, as one-shot.
No checkpoints are stored.

The paper leaves these choices open; each is a parameter (default in brackets):

- ``projection`` [gaussian]: entries N(0, scale^2), ``rademacher`` (+-scale) or
  ``orthogonal`` (orthonormal columns times sqrt(d_teacher) * scale); drawn once per
  stage from the run seed and fixed. ``projection_scale`` [1/sqrt(d_teacher)].
- ``layers`` [every student layer] and ``layer_map`` [proportional: teacher layer
  round(l * L_teacher / L_student)] between student and teacher depths.
- ``train`` [upto]: stage i trains student layers <= l_i (``upto``), only layer
  l_i (``layer``) or every parameter (``all``).
- ``student_repr`` [pre] / ``teacher_repr`` [post]: pre- or post-activation
  where the model has a nonlinearity (the MLP); encoders' block outputs have one form.
- ``positions`` [all]: token positions in the MSE for token models: ``all`` or
  ``masked`` (the MLM positions only).
- ``extraction_share`` [0.45] of the budget, split over stages ``evenly`` or by
  ``stage_weights``.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from kdbench.api import Method, Phase
from kdbench.distill_options import BasicDistillOptions
from kdbench.hookspecs import hookimpl
from kdbench.losses import final_teacher_phase


class ExtractionParams(BasicDistillOptions):
    """The extraction stages' params, and the temperature and label weight of the final logit phase."""

    extraction_share: float = Field(0.45, ge=0, lt=1, description="budget share of all extraction stages")
    stage_weights: Optional[list[float]] = Field(None, description="relative budget per stage (default even)")
    layers: Optional[list[int]] = Field(None, description="student layers to extract, in order (default all)")
    layer_map: Optional[list[int]] = Field(None, description="teacher layer for each extracted student layer")
    projection: Literal["gaussian", "rademacher", "orthogonal"] = Field(
        "gaussian", description="distribution of the fixed random projection of the teacher's layer")
    projection_scale: Optional[float] = Field(None, gt=0, description="entry std (default 1/sqrt(d_teacher))")
    train: Literal["upto", "layer", "all"] = Field(
        "upto", description="what stage i trains: student layers <= l_i, only layer l_i, or every parameter")
    student_repr: Literal["pre", "post"] = Field(
        "pre", description="student representation matched: before or after the nonlinearity (MLP)")
    teacher_repr: Literal["pre", "post"] = Field(
        "post", description="teacher representation projected: before or after the nonlinearity (MLP)")
    positions: Literal["all", "masked"] = Field(
        "all", description="token positions in the MSE (token models): all, or the masked (MLM) ones only")

    @model_validator(mode="after")
    def _lengths(self):
        if self.layer_map is not None and self.layers is not None and len(self.layer_map) != len(self.layers):
            raise ValueError("layer_map needs one teacher layer per entry of layers")
        if self.stage_weights is not None and (not self.stage_weights or min(self.stage_weights) <= 0):
            raise ValueError("stage_weights must be positive")
        return self


def draw_projection(kind: str, d_teacher: int, d_student: int, scale: Optional[float],
                    generator: torch.Generator) -> torch.Tensor:
    """A fixed [d_teacher, d_student] projection drawn from ``generator`` (on the CPU, for
    reproducibility across devices)."""
    scale = scale if scale is not None else 1 / math.sqrt(d_teacher)
    if kind == "gaussian":
        return torch.randn(d_teacher, d_student, generator=generator) * scale
    if kind == "rademacher":
        return (torch.randint(0, 2, (d_teacher, d_student), generator=generator).float() * 2 - 1) * scale
    # orthogonal: orthonormal columns (or rows, if wider than tall), entries rescaled to std ~ scale
    tall = d_teacher >= d_student
    q, _ = torch.linalg.qr(torch.randn(*((d_teacher, d_student) if tall else (d_student, d_teacher)),
                                       generator=generator))
    return (q if tall else q.T) * math.sqrt(max(d_teacher, d_student)) * scale


def stage_layers(params: ExtractionParams, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student layer, teacher layer) for every extraction stage."""
    layers = params.layers or list(range(1, student_layers + 1))
    for l in layers:
        if not 1 <= l <= student_layers:
            raise ValueError(f"layers: student layer {l} outside 1..{student_layers}")
    mapped = params.layer_map or [max(1, round(l * teacher_layers / student_layers)) for l in layers]
    for m in mapped:
        if not 1 <= m <= teacher_layers:
            raise ValueError(f"layer_map: teacher layer {m} outside 1..{teacher_layers}")
    return list(zip(layers, mapped))


class StageLoss:
    """One extraction stage's loss: MSE between the student's layer ``s_layer`` and the teacher's
    layer ``t_layer`` times the stage's fixed ``projection`` (kept here, so it can be inspected)."""

    def __init__(self, student, teacher, s_layer: int, t_layer: int, projection: torch.Tensor,
                 params: ExtractionParams):
        self.student, self.teacher, self.s_layer, self.t_layer = student, teacher, s_layer, t_layer
        self.projection, self.params = projection, params

    def __call__(self, batch) -> torch.Tensor:
        p = self.params
        rep = self.student(batch.inputs, upto=self.s_layer, pre_activation=p.student_repr == "pre")
        with torch.no_grad():
            target = self.teacher(batch.inputs, upto=self.t_layer, pre_activation=p.teacher_repr == "pre")
        if p.positions == "masked" and batch.mask is not None:  # outside no_grad: the student keeps its gradient
            rep, target = rep[batch.mask], target[batch.mask]
        return F.mse_loss(rep.float(), (target @ self.projection).float())


class CurriculumExtraction(Method):
    """Layer-wise MSE to fixed random projections of the final teacher's layers, then its logits."""

    name = "curriculum-extraction"
    version = "2"  # 2: projections drawn from the method's own random stream; positions: masked trains
    Params = ExtractionParams
    description = "extract a curriculum from the final teacher's layers (Gupta & Karmalkar 2025)"

    def phases(self, ctx, params):
        student, teacher = ctx.student, ctx.teacher.final()
        stages = stage_layers(params, student.num_layers, teacher.num_layers)
        weights = params.stage_weights or [1.0] * len(stages)
        if len(weights) != len(stages):
            raise ValueError(f"stage_weights has {len(weights)} entries for {len(stages)} stages")
        phases = []
        for (s_layer, t_layer), w in zip(stages, weights):
            projection = draw_projection(params.projection, teacher.hidden_size(t_layer),
                                         student.hidden_size(s_layer), params.projection_scale,
                                         ctx.generator).to(ctx.device)
            phases.append(Phase(
                f"extract-layer-{s_layer}", loss=StageLoss(student, teacher, s_layer, t_layer, projection, params),
                share=params.extraction_share * w / sum(weights), params=self._trained(student, s_layer, params.train),
                teacher=f"final, layer {t_layer}", depth=s_layer, info={"teacher_layer": t_layer}))
        phases.append(final_teacher_phase(ctx, options=params))
        return phases

    @staticmethod
    def _trained(student, layer: int, which: str):
        if which == "all":
            return None
        layers = [layer] if which == "layer" else range(1, layer + 1)
        return [p for l in layers for p in student.layer_parameters(l)]


@hookimpl
def kdbench_register_methods():
    return [CurriculumExtraction]
