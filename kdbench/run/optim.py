"""Optimizers and learning-rate schedules from a :class:`kdbench.Recipe`."""

from __future__ import annotations

import inspect
import math
import os
import sys

import torch
from torch import nn
from torch.utils import _foreach_utils

from kdbench.api import Recipe
from kdbench.errors import UserError

_GUARDED_METHODS = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def _skip_dynamo_guards() -> None:
    """Let torch.optim.Optimizer's methods run without importing ``torch._dynamo``.

    torch wraps these methods in ``torch._disable_dynamo``, whose first call imports
    ``torch._dynamo`` (1-2.5 s here: most of a short run's fixed cost, paid again by every
    ``--jobs`` worker) only to keep torch.compile from tracing them. kdbench never compiles its
    steps, so each wrapper's cached "disabled" function is set to the plain method, which is what
    the wrapper calls outside compilation anyway. Nothing is changed once torch._dynamo is loaded
    (someone compiles: torch's own guards then apply), nor where torch's wrapper has changed.
    """
    if "torch._dynamo" in sys.modules:
        return
    for name in _GUARDED_METHODS:
        plain = getattr(getattr(torch.optim.Optimizer, name, None), "__wrapped__", None)
        if plain is not None and not hasattr(plain, "__dynamo_disable"):
            setattr(plain, "__dynamo_disable", plain)


_skip_dynamo_guards()


def _eager_step(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``cls`` whose ``step`` runs torch's own update under ``torch.no_grad()``.

    torch's ``step`` wrapper does exactly that plus two ``torch._dynamo.graph_break()`` calls,
    which import torch._dynamo on the first step (see :func:`_skip_dynamo_guards`). The update
    itself is torch's, unchanged (a test checks the parameters are bit-identical).
    """
    update = inspect.unwrap(cls.step)

    def step(self, closure=None):
        with torch.no_grad():
            return update(self, closure)

    return type(cls.__name__, (cls,), {"step": step, "__doc__": cls.__doc__, "__module__": __name__})


SGD, Adam, AdamW = (_eager_step(cls) for cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW))


KERNEL_VARIABLE = "KDBENCH_OPTIMIZER_KERNEL"
KERNELS = ("fused", "foreach")


def _fused_devices() -> list[str]:
    """The device types torch has fused optimizer kernels for (CPU since torch 2.4)."""
    return getattr(_foreach_utils, "_get_fused_kernels_supported_devices", lambda: ["cuda"])()


def optimizer_kernel(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     kernel: str | None = None) -> str:
    """The update :func:`make_optimizer` runs for parameters of ``dtype`` on ``device``.

    ``kernel`` if given, else ``KDBENCH_OPTIMIZER_KERNEL`` if set, else ``"fused"``; ``"fused"``
    becomes ``"foreach"`` where torch has no fused kernel for that device and dtype. ``"foreach"``
    is the update of kdbench <= 0.4 (multi-tensor Adam and AdamW, torch's default SGD), which
    reproduces their results bit for bit; fused kernels round differently (~1e-7 relative per step).
    """
    if kernel is None:
        kernel = os.environ.get(KERNEL_VARIABLE) or "fused"
        if kernel not in KERNELS:
            raise UserError(f"{KERNEL_VARIABLE}={kernel!r}: not one of {', '.join(KERNELS)}")
    elif kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r}: not one of {', '.join(KERNELS)}")
    fusable = torch.device(device).type in _fused_devices() and dtype.is_floating_point
    return "fused" if kernel == "fused" and fusable else "foreach"


def make_optimizer(params: list[nn.Parameter], recipe: Recipe, kernel: str | None = None) -> torch.optim.Optimizer:
    """The optimizer a recipe names, running the update ``kernel`` asks for (see :func:`optimizer_kernel`):
    torch's fused kernels by default, where every parameter's device and dtype has them."""
    kinds = {(p.device, p.dtype) for p in params}  # asked once per device and dtype, not per parameter
    fused = all(optimizer_kernel(device, dtype, kernel) == "fused" for device, dtype in kinds)
    if recipe.optimizer == "sgd":
        return SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                   fused=fused or None)
    cls = Adam if recipe.optimizer == "adam" else AdamW
    return cls(params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay,
               **({"fused": True} if fused else {"foreach": True}))


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
