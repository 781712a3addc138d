"""What the causal language-model tasks (lm, pcfg-lm) share: rows to batches, models, perplexity.

A row is ``seq_len + 1`` tokens; the model reads ``row[:-1]`` and is scored on predicting
``row[1:]`` where the mask is true (see :class:`kdbench.CausalLMInstance`). Models are
:class:`kdbench.Encoder` with ``causal=True`` (kdbench's decoder: the encoder's blocks under a
causal mask, same layered interface), or a Hugging Face GPT-2-style model (``teacher_hf`` /
``student_hf`` with ``model_type: gpt2``).

Perplexity is ``exp`` of the mean next-token negative log-likelihood over every scored
position of the evaluation rows (each position counts once, rows of any length); next-token
accuracy is the share of those positions where the argmax is the true next token.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from pydantic import Field

from kdbench.api import Batch, CausalLMInstance, Params
from kdbench.models import Encoder
from kdbench.tasks.mlm import masked_logits


class DecoderSizes(Params):
    """Teacher and student decoder sizes and the evaluation chunk, shared by the LM tasks' params."""

    teacher_layers: int = Field(4, ge=1, description="teacher transformer blocks")
    teacher_heads: int = Field(4, ge=1, description="teacher attention heads")
    teacher_width: int = Field(64, ge=1, description="teacher model width (heads x head dimension)")
    student_layers: int = Field(2, ge=1, description="student transformer blocks")
    student_heads: int = Field(2, ge=1, description="student attention heads")
    student_width: int = Field(32, ge=1, description="student model width (heads x head dimension)")
    mlp_ratio: int = Field(4, ge=1, description="MLP hidden width / model width")
    eval_size: int = Field(256, ge=1, description="evaluation rows")
    eval_batch_size: int = Field(128, ge=1, description="evaluation chunk (memory only, not results)")


@torch.no_grad()
def perplexity_and_accuracy(model: torch.nn.Module, batch: Batch, chunk: int) -> dict[str, float]:
    """Perplexity (exp of the mean NLL over every scored position) and next-token accuracy."""
    nll, correct, count = 0.0, 0, 0
    for logits, labels in masked_logits(model, batch, chunk):
        nll += float(F.cross_entropy(logits.double(), labels, reduction="sum"))
        correct += int((logits.argmax(-1) == labels).sum())
        count += len(labels)
    mean = nll / count
    return {"perplexity": math.exp(min(mean, 700.0)), "next_token_accuracy": correct / count, "nll": mean}


class CausalLMBase(CausalLMInstance):
    """Batches from rows, causal decoders sized by ``teacher_*`` / ``student_*`` params, perplexity on
    ``self.eval_batch``. Subclasses set ``p``, ``device``, ``vocab_size``, ``seq_len``, ``prompt_len``,
    ``pad_id``, ``end_id`` and ``eval_batch``."""

    def batch_from_tokens(self, tokens: torch.Tensor) -> Batch:
        return self.rows_to_batch(tokens, first_label=self.prompt_len - 1)

    def rows_to_batch(self, tokens: torch.Tensor, first_label: int = 0) -> Batch:
        """A batch of rows learning every next token from input position ``first_label`` on (0: the
        whole row, as plain language-model training does), up to each row's end token."""
        tokens = tokens.long()
        labels_at = torch.ones_like(tokens[:, 1:], dtype=torch.bool)
        labels_at[:, :first_label] = False
        if self.end_id is not None:
            # everything after a row's first end token is padding; the end token itself is learned
            ended = (tokens == self.end_id).long().cumsum(1)
            after_end = torch.cat([torch.zeros_like(ended[:, :1]), ended[:, :-1]], 1) > 0
            tokens = tokens.masked_fill(after_end, self.pad_id)
            labels_at &= ~after_end[:, 1:]
        return Batch(tokens[:, :-1], tokens[:, 1:][labels_at], labels_at, tokens=tokens)

    def evaluate(self, model) -> dict[str, float]:
        return perplexity_and_accuracy(model, self.eval_batch, self.p.eval_batch_size)

    def eval_logits(self, model) -> Iterator[torch.Tensor]:
        return (logits for logits, _ in masked_logits(model, self.eval_batch, self.p.eval_batch_size))

    def teacher_source(self):
        return self.p.pretrained_teacher()

    def _model(self, who: str) -> torch.nn.Module:
        from kdbench.tasks.hf_models import build_hf_model  # noqa: PLC0415 (transformers only when asked)

        p = self.p
        spec = getattr(p, f"{who}_hf")
        if spec is not None:
            return build_hf_model(spec, self.vocab_size, f"{who}_hf", causal=True, seq_len=self.seq_len).to(self.device)
        return Encoder(vocab_size=self.vocab_size, outputs=self.vocab_size, max_len=self.seq_len,
                       width=getattr(p, f"{who}_width"), heads=getattr(p, f"{who}_heads"),
                       layers=getattr(p, f"{who}_layers"), mlp_ratio=p.mlp_ratio, causal=True).to(self.device)

    def teacher_model(self) -> torch.nn.Module:
        return self._model("teacher")

    def student_model(self) -> torch.nn.Module:
        return self._model("student")
