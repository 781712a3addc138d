"""What the transformer family's methods share: the uniform layer map and the checks they make of the models."""

from __future__ import annotations

import torch
from torch import nn

from kdbench import UserError


def bert_linear(d_in: int, d_out: int, generator: torch.Generator, device) -> nn.Linear:
    """A learned projection ``nn.Linear(d_in, d_out)`` with BERT's initialisation (N(0, 0.02) weight, zero bias),
    drawn from ``generator`` only (the run's random stream; the global one is untouched)."""
    layer = nn.Linear(d_in, d_out, device="meta").to_empty(device="cpu")
    nn.init.normal_(layer.weight.data, std=0.02, generator=generator)
    nn.init.zeros_(layer.bias.data)
    return layer.to(device)


def uniform_map(student_layer: int, student_layers: int, teacher_layers: int) -> int:
    """The teacher layer of student layer ``m``: ``g(m) = m * N / M`` (TinyBERT's uniform strategy),
    rounded, at least 1; with N a multiple of M it is exactly ``m * N / M``."""
    return max(1, round(student_layer * teacher_layers / student_layers))


def equal_heads(who: str, student, s_layer: int, teacher, t_layer: int, why: str) -> int:
    """The heads of the two layers; a :class:`kdbench.UserError` naming ``who`` unless they are equal."""
    s_heads, t_heads = student.attention_heads(s_layer), teacher.attention_heads(t_layer)
    if s_heads != t_heads:
        raise UserError(f"{who}: cannot apply to this task: the student's layer {s_layer} has {s_heads} attention "
                        f"heads and the teacher's layer {t_layer} has {t_heads}; {why}")
    return s_heads
