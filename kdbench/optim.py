"""Optimizers and learning-rate schedules from a :class:`kdbench.Recipe`."""

from __future__ import annotations

import math

import torch
from torch import nn

from .api import Recipe


def make_optimizer(params: list[nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
    """The optimizer a recipe names (multi-tensor kernels where PyTorch has them: same maths, faster)."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay, foreach=True)


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int):
    """Linear warm-up for ``recipe.warmup`` of the steps, then constant, cosine or linear decay to 0."""
    warmup = int(recipe.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if recipe.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return max(0.0, 1 - progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def is_constant(recipe: Recipe) -> bool:
    """True when the learning rate never changes (the schedule then needs no stepping)."""
    return recipe.schedule == "constant" and recipe.warmup == 0
