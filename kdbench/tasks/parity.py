"""Sparse parity (n, k) learned by an MLP.

x is uniform in {-1, +1}^n, the label is the product of the k support
coordinates (as class 0 for -1 and 1 for +1). Samples are fresh every step; the
evaluation set is a fixed set of fresh samples drawn from the data seed.

Options shared with ``parity-transformer``:

``levels`` (default 1: the plain parity above) makes the label hierarchical, as
the public progressive-distillation code's ``hierarchical`` data with
``num_labels = 2^levels``: a complete binary tree of depth ``levels`` has a
support of k coordinates at each of its ``2^levels - 1`` inner nodes (in heap
order: root 1, children of v are 2v and 2v+1), the class is the leaf reached by
descending from the root, going to child 2v where the parity over node v's
support is +1 and to 2v+1 where it is -1, so the class's bits, most significant
first, are the parities along that path: ``2^levels`` classes. The public code
numbers leaves left to right; kdbench numbers them right to left (class ``2^levels
- 1 - c`` for its class c) so that ``levels: 1`` is exactly the plain parity.
``support: first`` takes disjoint consecutive blocks of k coordinates, node v the
v-th (as that code does); ``random`` draws ``(2^levels - 1) k`` distinct coordinates
from the data seed (that code draws each node's with replacement).

``probe_degree`` (default 0: off) adds to every evaluation the correlation of the
model's output margin with each monomial of the support of degree <= d and with
the full parity (:mod:`kdbench.tasks.monomials`), as curve columns ``corr:x0x3``;
the teacher's curve gets them too. Plain parity only (``levels: 1``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from kdbench.api import Batch, Params, Recipe, Task, TaskInstance, new_param
from kdbench.hookspecs import hookimpl
from kdbench.models import MLP
from kdbench.tasks.monomials import correlations, output_margin, support_monomials

LEVELS = "hierarchical parity: 2^levels classes, the parities of 2^levels - 1 supports along a path of a binary " \
         "tree (the public code's num_labels = 2^levels); 1: plain parity"
PROBE = "correlations of the output margin with the support's monomials of degree <= this (and the parity) at " \
        "every evaluation, as curve columns corr:x0x3; 0: off (plain parity only)"


class ParityOptions(Params):
    """The params both parity tasks share: the data, the hierarchy and the probe."""

    n: int = Field(100, ge=1, description="input bits")
    k: int = Field(6, ge=1, description="support size")
    support: Literal["first", "random"] = Field(
        "first", description="the support: the first k coordinates, or k drawn from the data seed")
    levels: int = new_param(1, ge=1, description=LEVELS)
    probe_degree: int = new_param(0, ge=0, description=PROBE)

    @model_validator(mode="after")
    def _fits(self):
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must be <= n ({self.n})")
        nodes = 2 ** self.levels - 1
        if nodes * self.k > self.n:
            raise ValueError(f"levels: {self.levels} needs {nodes} supports of k={self.k} distinct coordinates, "
                             f"{nodes * self.k} > n ({self.n})")
        if self.probe_degree and self.levels > 1:
            raise ValueError("probe_degree needs levels: 1 (it correlates a two-class margin with the parity)")
        return self


class ParityParams(ParityOptions):
    k: int = Field(4, ge=1, description="support size")
    teacher_width: int = Field(1000, ge=1, description="teacher hidden width")
    student_width: int = Field(100, ge=1, description="student hidden width")
    depth: int = Field(1, ge=1, description="hidden layers of teacher and student (the papers use 1)")
    eval_size: int = Field(4096, ge=1, description="fresh samples in the fixed evaluation set")


def sample_bits(generator: torch.Generator, rows: int, n: int, device: torch.device) -> torch.Tensor:
    """Uniform {-1, +1} matrix of shape [rows, n]."""
    bits = torch.randint(0, 2, (rows, n), generator=generator, device=device)
    return bits.float().mul_(2).sub_(1)


def parity_labels(x: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Class 1 where the product over ``support`` is +1, class 0 where it is -1."""
    return (x[:, support].prod(dim=1) > 0).long()


def hierarchical_labels(x: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
    """The class of each row of ``x`` under the parity tree whose inner node v (heap order, root
    1) has support ``supports[v - 1]`` (``[2^levels - 1, k]``): descend to 2v where the parity
    over v's support is +1, to 2v+1 where it is -1; leaf ``2^levels + c`` (the public code's
    class c) is kdbench's class ``2^levels - 1 - c``. One row of supports: :func:`parity_labels`."""
    if len(supports) == 1:
        return parity_labels(x, supports[0])
    levels = (len(supports) + 1).bit_length() - 1
    node = torch.ones(len(x), dtype=torch.long, device=x.device)
    for _ in range(levels):
        node = 2 * node + (x.gather(1, supports[node - 1]).prod(dim=1) < 0).long()
    return 2 ** (levels + 1) - 1 - node


class ParityData:
    """The data both parity tasks share: supports drawn from the data seed, labels, evaluation
    bits, and the probe's monomials. ``generator`` is left where the evaluation set was drawn."""

    def __init__(self, p: ParityOptions, generator: torch.Generator, eval_size: int, device: torch.device):
        self.p, self.device = p, device
        nodes = 2 ** p.levels - 1
        if p.support == "first":
            coordinates = torch.arange(nodes * p.k, device=device)
        else:
            coordinates = torch.randperm(p.n, generator=generator, device=device)[: nodes * p.k]
        self.supports = coordinates.view(nodes, p.k).sort(dim=1).values
        self.support = self.supports[0]  # the plain parity's support (the root's)
        self.eval_bits = sample_bits(generator, eval_size, p.n, device)
        self.eval_y = self.labels(self.eval_bits)
        self.monomials = support_monomials(self.support.tolist(), p.probe_degree) if p.probe_degree else []

    @property
    def classes(self) -> int:
        return 2 ** self.p.levels

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        return hierarchical_labels(x, self.supports)

    def batch_bits(self, generator: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh batch of {-1, +1} inputs and their classes."""
        x = sample_bits(generator, batch_size, self.p.n, self.device)
        return x, self.labels(x)

    def probe(self, logits: torch.Tensor) -> dict[str, float]:
        """The probe's correlations for a model's ``logits`` on the evaluation set ({} when off)."""
        return correlations(self.eval_bits, output_margin(logits), self.monomials) if self.monomials else {}


class ParityInstance(TaskInstance):
    metric = "accuracy"

    def __init__(self, params: ParityParams, seed: int, device: torch.device):
        self.p = params
        self.device = device
        self.data = ParityData(params, torch.Generator(device=device).manual_seed(seed), params.eval_size, device)
        self.support, self.eval_x, self.eval_y = self.data.support, self.data.eval_bits, self.data.eval_y

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        return Batch(*self.data.batch_bits(generator, batch_size))

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        logits = model(self.eval_x)
        loss = torch.nn.functional.cross_entropy(logits, self.eval_y)
        acc = (logits.argmax(-1) == self.eval_y).float().mean()
        return {"accuracy": acc.item(), "loss": loss.item(), **self.data.probe(logits)}

    def eval_logits(self, model) -> list[torch.Tensor]:
        return [model(self.eval_x)]

    def teacher_model(self) -> MLP:
        return MLP(self.p.n, [self.p.teacher_width] * self.p.depth, self.data.classes).to(self.device)

    def student_model(self) -> MLP:
        return MLP(self.p.n, [self.p.student_width] * self.p.depth, self.data.classes).to(self.device)


class ParityMLP(Task):
    """Sparse parity with an MLP (Panigrahi et al. 2024, section on parity)."""

    name = "parity-mlp"
    version = "1"
    Params = ParityParams
    description = "sparse parity (n, k), one-hidden-layer MLP teacher and student"

    def build(self, params, seed, device, cache_dir=None):
        return ParityInstance(params, seed, device)

    # the defaults are suites/quickstart.yaml's laptop size; the papers' is a preset
    presets = {"paper": {  # SGD, batch 1, ~10M steps before the 50,000-wide teacher's accuracy jumps
        "params": {"n": 100, "k": 6, "teacher_width": 50_000, "student_width": 100},
        "teacher": {"optimizer": "sgd", "lr": 0.01, "batch_size": 1, "steps": 10_000_000, "checkpoint_every": 100_000},
        "student": {"optimizer": "sgd", "lr": 0.01, "batch_size": 1}}}

    def teacher_recipe(self, params):
        return Recipe(optimizer="adam", lr=0.002, batch_size=64, steps=14_000, checkpoint_every=250)

    def student_recipe(self, params):
        return Recipe(optimizer="adam", lr=0.002, batch_size=64)


@hookimpl
def kdbench_register_tasks():
    return [ParityMLP]
