"""Masked language modelling on strings of a probabilistic context-free grammar (pcfg-bert).

Strings come from ``grammar``: ``cfg3b`` (Allen-Zhu & Li), ``cfg3b-pd`` (the
copy in the public progressive-distillation code, 9 -> 3 2 1 only) or a grammar
file in the format of :mod:`kdbench.tasks.grammar`. Every training batch is
freshly sampled from the engine's generator (vectorized, reproducible); the
evaluation set is sampled and masked once from the data seed.

Tokens: 0 pad, the grammar's terminals 1..T, T+1 the start-of-string token
([CLS], prepended to every string), T+2 [MASK]. A sequence is ``[CLS]`` +
the string, cut to ``seq_len`` tokens (longer strings are truncated) and
padded on the right; padding is an ordinary token the model sees (no attention
mask). Only terminals are ever masked ([CLS] and padding never). ``seq_len``
defaults to the longest derivable string + 1 (433 for cfg3b, whose strings
are 138-432 terminals long, ~276 on average; 161-432 and ~294 for cfg3b-pd),
so nothing is truncated. Masking is BERT's (:mod:`kdbench.tasks.mlm`), random
replacements drawn from the terminals; the mask rate defaults to 0.3 as in the
progressive-distillation code. Metric: masked-token accuracy.

Reference models (progressive-distillation paper): teacher 4 layers, 32 heads,
256-d; student 4 layers, 8 heads, 64-d; AdamW lr 5e-3, betas (0.9, 0.95),
cosine with 6% warm-up, batch 512.
"""

from __future__ import annotations

import math
from typing import Annotated, Optional

import torch
from pydantic import Field

from kdbench.api import Batch, Recipe, Task
from kdbench.errors import UserError
from kdbench.hookspecs import hookimpl
from kdbench.inputs import PathParam
from kdbench.streams import substream
from kdbench.tasks.encoder_sizes import EncoderSizes
from kdbench.tasks.grammar import NAMED_GRAMMARS, Grammar, load_grammar
from kdbench.tasks.mlm import Masker, MLMInstance, MLMParams


class PCFGParams(EncoderSizes, MLMParams):
    grammar: Annotated[str, PathParam(when=lambda spec: spec not in NAMED_GRAMMARS)] = Field(
        "cfg3b", description="cfg3b, cfg3b-pd, or a grammar file (in a suite: relative to the suite's folder)")
    # the defaults are suites/cpu/pcfg-bert.yaml's CPU size; the papers' is the preset "paper"
    seq_len: Optional[int] = Field(64, ge=2, description="tokens per sequence ([CLS] included; longer strings are "
                                                         "cut); null: the longest string + 1")
    mask_rate: float = Field(0.3, gt=0, le=1, description="fraction of positions chosen for prediction")
    teacher_layers: int = Field(4, ge=1, description="teacher transformer blocks")
    teacher_heads: int = Field(4, ge=1, description="teacher attention heads")
    teacher_width: int = Field(64, ge=1, description="teacher model width (heads x head dimension)")
    student_layers: int = Field(4, ge=1, description="student transformer blocks")
    student_heads: int = Field(2, ge=1, description="student attention heads")
    student_width: int = Field(32, ge=1, description="student model width (heads x head dimension)")
    mlp_ratio: int = Field(4, ge=1, description="MLP hidden width / model width")
    eval_size: int = Field(256, ge=1, description="evaluation strings (the public code used 4096)")
    eval_batch_size: int = Field(128, ge=1, description="evaluation chunk (memory only, not results)")


class PCFGInstance(MLMInstance):
    """cfg3b strings (or a grammar file's), padded to ``seq_len`` after [CLS], masked BERT-style."""

    def __init__(self, params: PCFGParams, seed: int, device: torch.device):
        self.p, self.device = params, device
        params.check_hf_installed()
        self.grammar: Grammar = load_grammar(params.grammar)
        longest = self.grammar.length_bounds()[1]
        if params.seq_len is None and math.isinf(longest):
            raise UserError(f"grammar {params.grammar!r} is recursive (unbounded string length): "
                            f"set the task's seq_len")
        self.seq_len = params.seq_len or int(longest) + 1
        # strings longer than the sequence are cut anyway: reject runaway recursive derivations well above it
        self.max_length = max(4 * self.seq_len, 1024)
        n_terminals = len(self.grammar.terminals)
        self.cls_id, self.mask_id = n_terminals + 1, n_terminals + 2
        self.vocab_size = n_terminals + 3
        self.masker = Masker.from_params(params, self.mask_id, 1, n_terminals + 1)
        g = torch.Generator(device=device).manual_seed(seed)
        tokens = self.sequences(g, params.eval_size)
        self.eval_batch = self.masker(tokens, self.maskable(tokens), substream(g, "masking"))

    def sequences(self, generator: torch.Generator, n: int) -> torch.Tensor:
        """``n`` sampled strings as ``[n, seq_len]`` token ids: [CLS], terminals, padding."""
        strings, _ = self.grammar.sample(generator, n, max_length=self.max_length, device=self.device)
        out = torch.zeros(n, self.seq_len, dtype=torch.long, device=self.device)
        out[:, 0] = self.cls_id
        width = min(strings.shape[1], self.seq_len - 1)
        out[:, 1:width + 1] = strings[:, :width]
        return out

    def maskable(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens >= 1) & (tokens < self.cls_id)

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        tokens = self.sequences(generator, batch_size)
        return self.masker(tokens, self.maskable(tokens), substream(generator, "masking"))


def mlm_recipe(steps: int = 1000, checkpoint_every: int = 0) -> Recipe:
    """The progressive-distillation code's MLM optimizer: AdamW 5e-3, betas (0.9, 0.95), cosine, 6% warm-up."""
    return Recipe(optimizer="adamw", lr=5e-3, betas=(0.9, 0.95), weight_decay=0.0, schedule="cosine",
                  warmup=0.06, batch_size=512, steps=steps, checkpoint_every=checkpoint_every)


class PCFGBert(Task):
    """BERT-style MLM on cfg3b strings (Panigrahi et al. 2024, after Allen-Zhu & Li 2023)."""

    name = "pcfg-bert"
    version = "1"
    Params = PCFGParams
    description = "masked language modelling on PCFG (cfg3b) strings, encoder teacher and student"

    def build(self, params, seed, device, cache_dir=None):
        return PCFGInstance(params, seed, device)

    # the papers' size: whole strings, a 32-head 256-d teacher trained 8k steps at batch 512 (the public code's
    # teacher checkpoints are read at 1k..8k steps), its AdamW 5e-3
    presets = {"paper": {
        "params": {"seq_len": None, "teacher_heads": 32, "teacher_width": 256, "student_heads": 8,
                   "student_width": 64, "eval_size": 1024},
        "teacher": {"lr": 5e-3, "batch_size": 512, "steps": 8000, "checkpoint_every": 1000},
        "student": {"lr": 5e-3, "batch_size": 512}}}

    def teacher_recipe(self, params):
        return mlm_recipe(steps=2000, checkpoint_every=200).model_copy(update={"lr": 3e-3, "batch_size": 32})

    def student_recipe(self, params):
        return mlm_recipe().model_copy(update={"lr": 3e-3, "batch_size": 32})


@hookimpl
def kdbench_register_tasks():
    return [PCFGBert]
