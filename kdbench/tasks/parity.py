"""Sparse parity (n, k) learned by an MLP.

x is uniform in {-1, +1}^n, the label is the product of the k support
coordinates (as class 0 for -1 and 1 for +1). Samples are fresh every step; the
evaluation set is a fixed set of fresh samples drawn from the data seed.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from ..api import Batch, Params, Recipe, Task, TaskInstance
from ..hookspecs import hookimpl
from ..models import MLP


class ParityParams(Params):
    n: int = Field(100, ge=1, description="input bits")
    k: int = Field(6, ge=1, description="support size")
    support: Literal["first", "random"] = Field(
        "first", description="the support: the first k coordinates, or k drawn from the data seed")
    teacher_width: int = Field(50_000, ge=1, description="teacher hidden width")
    student_width: int = Field(100, ge=1, description="student hidden width")
    depth: int = Field(1, ge=1, description="hidden layers of teacher and student (the papers use 1)")
    eval_size: int = Field(4096, ge=1, description="fresh samples in the fixed evaluation set")

    @model_validator(mode="after")
    def _k_le_n(self):
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must be <= n ({self.n})")
        return self


def sample_bits(generator: torch.Generator, rows: int, n: int, device: torch.device) -> torch.Tensor:
    """Uniform {-1, +1} matrix of shape [rows, n]."""
    bits = torch.randint(0, 2, (rows, n), generator=generator, device=device)
    return bits.float().mul_(2).sub_(1)


def parity_labels(x: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Class 1 where the product over ``support`` is +1, class 0 where it is -1."""
    return (x[:, support].prod(dim=1) > 0).long()


class ParityInstance(TaskInstance):
    metric = "accuracy"

    def __init__(self, params: ParityParams, seed: int, device: torch.device):
        self.p = params
        self.device = device
        g = torch.Generator(device=device).manual_seed(seed)
        if params.support == "first":
            self.support = torch.arange(params.k, device=device)
        else:
            self.support = torch.randperm(params.n, generator=g, device=device)[: params.k].sort().values
        self.eval_x = sample_bits(g, params.eval_size, params.n, device)
        self.eval_y = parity_labels(self.eval_x, self.support)

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        x = sample_bits(generator, batch_size, self.p.n, self.device)
        return Batch(x, parity_labels(x, self.support))

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        logits = model(self.eval_x)
        loss = torch.nn.functional.cross_entropy(logits, self.eval_y)
        acc = (logits.argmax(-1) == self.eval_y).float().mean()
        return {"accuracy": acc.item(), "loss": loss.item()}

    def teacher_model(self) -> MLP:
        return MLP(self.p.n, [self.p.teacher_width] * self.p.depth, 2).to(self.device)

    def student_model(self) -> MLP:
        return MLP(self.p.n, [self.p.student_width] * self.p.depth, 2).to(self.device)


class ParityMLP(Task):
    """Sparse parity with an MLP (Panigrahi et al. 2024, section on parity)."""

    name = "parity-mlp"
    version = "1"
    Params = ParityParams
    description = "sparse parity (n, k), one-hidden-layer MLP teacher and student"

    def build(self, params, seed, device, cache_dir=None):
        return ParityInstance(params, seed, device)

    def teacher_recipe(self, params):
        # paper scale: SGD, batch 1, ~10M steps before the teacher's accuracy jumps
        return Recipe(optimizer="sgd", lr=0.01, batch_size=1, steps=10_000_000, checkpoint_every=100_000)

    def student_recipe(self, params):
        return Recipe(optimizer="sgd", lr=0.01, batch_size=1)


@hookimpl
def kdbench_register_tasks():
    return [ParityMLP]
