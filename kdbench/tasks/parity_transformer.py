"""Sparse parity (n, k) learned by a transformer: bits as tokens, class read at the last position.

The data are those of ``parity-mlp`` (x uniform in {-1, +1}^n, label the product
over the support as class 0/1, fresh samples every step, a fixed evaluation
set from the data seed); the n coordinates become n tokens, ``+1 -> 0`` and
``-1 -> 1`` as in the public progressive-distillation code. Teacher and student
are :class:`kdbench.models.Encoder` s with a two-class head read at the last
position; attention is causal by default (that code trains GPT-2), or
bidirectional with ``causal: false``. Paper sizes (Panigrahi et al. 2024): 2
layers, head dimension 8, teacher 32 heads (256-d), student 4 heads (32-d in
the public code; the curriculum-extraction paper uses 256-d students: set
``student_width``).

``levels`` (hierarchical parity, ``2^levels`` classes) and ``probe_degree``
(correlations of the output margin with the support's monomials at every
evaluation) are as in ``parity-mlp`` (see :mod:`kdbench.tasks.parity`).
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench.api import Batch, Recipe, Task, TaskInstance
from kdbench.hookspecs import hookimpl
from kdbench.models import Encoder
from kdbench.tasks.encoder_sizes import EncoderSizes
from kdbench.tasks.parity import ParityData, ParityOptions


class ParityTransformerParams(EncoderSizes, ParityOptions):
    # the defaults are suites/cpu/parity-transformer.yaml's CPU size; the papers' is the preset "paper"
    n: int = Field(24, ge=1, description="input bits")
    k: int = Field(2, ge=1, description="support size")
    causal: bool = Field(True, description="causal (GPT-style) attention; false: bidirectional")
    teacher_layers: int = Field(2, ge=1, description="teacher transformer blocks")
    teacher_heads: int = Field(16, ge=1, description="teacher attention heads")
    teacher_width: int = Field(128, ge=1, description="teacher model width (heads x head dimension)")
    student_layers: int = Field(2, ge=1, description="student transformer blocks")
    student_heads: int = Field(4, ge=1, description="student attention heads")
    student_width: int = Field(32, ge=1, description="student model width (heads x head dimension)")
    mlp_ratio: int = Field(4, ge=1, description="MLP hidden width / model width")
    eval_size: int = Field(2048, ge=1, description="fresh samples in the fixed evaluation set")
    eval_batch_size: int = Field(512, ge=1, description="evaluation chunk (memory only, not results)")


def bits_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """{+1, -1} coordinates to tokens {0, 1}."""
    return (x < 0).long()


class ParityTransformerInstance(TaskInstance):
    metric = "accuracy"

    def __init__(self, params: ParityTransformerParams, seed: int, device: torch.device):
        self.p, self.device = params, device
        self.data = ParityData(params, torch.Generator(device=device).manual_seed(seed), params.eval_size, device)
        self.support, self.eval_y = self.data.support, self.data.eval_y
        self.eval_x = bits_to_tokens(self.data.eval_bits)

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        x, y = self.data.batch_bits(generator, batch_size)
        return Batch(bits_to_tokens(x), y)

    @torch.no_grad()
    def eval_logits(self, model) -> Iterator[torch.Tensor]:
        for lo in range(0, self.p.eval_size, self.p.eval_batch_size):
            yield model(self.eval_x[lo:lo + self.p.eval_batch_size])

    def evaluate(self, model) -> dict[str, float]:
        correct, loss, chunks, lo = 0, 0.0, [], 0
        for logits in self.eval_logits(model):
            y = self.eval_y[lo:lo + len(logits)]
            lo += len(logits)
            correct += int((logits.argmax(-1) == y).sum())
            loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            if self.data.monomials:  # the probe needs every margin at once
                chunks.append(logits.float())
        probe = self.data.probe(torch.cat(chunks)) if chunks else {}
        return {"accuracy": correct / self.p.eval_size, "loss": loss / self.p.eval_size, **probe}

    def _model(self, who: str) -> Encoder:
        p = self.p
        return Encoder(vocab_size=2, outputs=self.data.classes, max_len=p.n, width=getattr(p, f"{who}_width"),
                       heads=getattr(p, f"{who}_heads"), layers=getattr(p, f"{who}_layers"),
                       mlp_ratio=p.mlp_ratio, causal=p.causal, readout="last").to(self.device)

    def teacher_model(self) -> Encoder:
        return self._model("teacher")

    def student_model(self) -> Encoder:
        return self._model("student")


class ParityTransformer(Task):
    """Sparse parity with transformer teacher and student (Panigrahi et al. 2024; Gupta & Karmalkar 2025)."""

    name = "parity-transformer"
    version = "1"
    Params = ParityTransformerParams
    description = "sparse parity (n, k), bits as tokens, encoder teacher and student, class at the last position"

    def build(self, params, seed, device, cache_dir=None):
        return ParityTransformerInstance(params, seed, device)

    # the papers' size: the public code's Adam, batch 32, 8M fresh samples (250k steps), checkpoints every
    # 100k samples, n=100, k=6, a 32-head 256-d teacher
    presets = {"paper": {
        "params": {"n": 100, "k": 6, "teacher_heads": 32, "teacher_width": 256, "eval_size": 4096},
        "teacher": {"lr": 3e-4, "steps": 250_000, "checkpoint_every": 3125},
        "student": {"lr": 1e-4}}}

    def teacher_recipe(self, params):
        # a CPU size: k=2 is learned within 4,000 steps (docs/cpu-regimes.md)
        return Recipe(optimizer="adam", lr=1e-3, batch_size=32, steps=4000, checkpoint_every=50)

    def student_recipe(self, params):
        return Recipe(optimizer="adam", lr=1e-3, batch_size=32)


@hookimpl
def kdbench_register_tasks():
    return [ParityTransformer]
