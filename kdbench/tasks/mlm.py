"""BERT-style masked-language-model data shared by the token tasks (pcfg-bert, wikipedia-bert).

Masking (Devlin et al. 2019): every maskable position is chosen independently
with probability ``mask_rate``; a chosen position becomes ``[MASK]`` with
probability ``replace_mask`` (0.8), a uniformly random ordinary token with
probability ``replace_random`` (0.1), and stays unchanged otherwise (0.1). The
loss and the accuracy are taken on the chosen positions only: a batch carries
the corrupted ``inputs``, the boolean ``mask`` of chosen positions and the
original tokens there as ``labels`` (flattened, aligned with the logits an
:class:`kdbench.models.Encoder` returns for ``mask``). A batch in which no
position was drawn gets one (the maskable position with the highest draw), so
the loss is never an empty mean. The masks of a batch are drawn from its own
``masking`` random stream (:func:`kdbench.streams.substream` of the batch's
generator), not from the bits that chose its sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from kdbench.api import Batch, TaskInstance
from kdbench.models import Encoder
from kdbench.tasks.hf_models import HFModelParams, build_hf_model


class MLMParams(HFModelParams):
    """Masking parameters, shared by the MLM tasks' params (with the Hugging Face model params)."""

    mask_rate: float = Field(0.15, gt=0, le=1, description="fraction of positions chosen for prediction")
    replace_mask: float = Field(0.8, ge=0, le=1, description="of the chosen: share replaced by [MASK]")
    replace_random: float = Field(0.1, ge=0, le=1, description="of the chosen: share replaced by a random token")

    @model_validator(mode="after")
    def _shares(self):
        if self.replace_mask + self.replace_random > 1:
            raise ValueError(f"replace_mask + replace_random must be <= 1, got "
                             f"{self.replace_mask} + {self.replace_random}")
        return self


@dataclass(frozen=True)
class Masker:
    """Applies BERT masking. Ordinary (random-replacement) tokens are ids ``low..high-1``, or the
    ids in ``ordinary`` when given (a tokenizer whose special tokens sit among the others)."""

    rate: float
    replace_mask: float
    replace_random: float
    mask_id: int
    low: int
    high: int
    ordinary: Optional[torch.Tensor] = field(default=None, compare=False)

    @classmethod
    def from_params(cls, p: MLMParams, mask_id: int, low: int, high: int,
                    ordinary: Optional[torch.Tensor] = None) -> "Masker":
        return cls(p.mask_rate, p.replace_mask, p.replace_random, mask_id, low, high, ordinary)

    def __call__(self, tokens: torch.Tensor, maskable: torch.Tensor, generator: torch.Generator) -> Batch:
        """Mask ``tokens`` ``[B, T]`` where ``maskable``; draws only from ``generator``."""
        device = tokens.device
        draw = torch.rand(tokens.shape, generator=generator, device=device)
        mask = (draw < self.rate) & maskable
        if not bool(mask.any()):
            pick = torch.where(maskable, draw, -1.0).flatten().argmax()
            mask.view(-1)[pick] = bool(maskable.view(-1)[pick])
        how = torch.rand(tokens.shape, generator=generator, device=device)
        if self.ordinary is None:
            random_tokens = torch.randint(self.low, self.high, tokens.shape, generator=generator, device=device)
        else:
            pick = torch.randint(0, len(self.ordinary), tokens.shape, generator=generator, device=device)
            random_tokens = self.ordinary.to(device)[pick]
        inputs = torch.where(mask & (how < self.replace_mask), self.mask_id, tokens)
        to_random = mask & (how >= self.replace_mask) & (how < self.replace_mask + self.replace_random)
        inputs = torch.where(to_random, random_tokens, inputs)
        return Batch(inputs, tokens[mask], mask)


def masked_logits(model: torch.nn.Module, batch: Batch, chunk: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``model``'s logits at the masked positions of a fixed masked set and their labels,
    ``chunk`` sequences at a time (chunks without a masked position are skipped)."""
    start = 0
    for lo in range(0, batch.inputs.shape[0], chunk):
        mask = batch.mask[lo:lo + chunk]
        n = int(mask.sum())
        if n == 0:
            continue
        yield model(batch.inputs[lo:lo + chunk], mask=mask), batch.labels[start:start + n]
        start += n


@torch.no_grad()
def evaluate_mlm(model: torch.nn.Module, batch: Batch, chunk: int) -> dict[str, float]:
    """Masked-token accuracy and mean cross-entropy of ``model`` on a fixed masked set,
    ``chunk`` sequences at a time. Every masked position counts once."""
    correct, loss, count = 0, 0.0, 0
    for logits, labels in masked_logits(model, batch, chunk):
        correct += int((logits.argmax(-1) == labels).sum())
        loss += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        count += len(labels)
    return {"masked_accuracy": correct / count, "masked_loss": loss / count}


class MLMInstance(TaskInstance):
    """What the MLM tasks share: encoder teacher and student sized by the params'
    ``teacher_*`` / ``student_*`` width, heads and layers, or the Hugging Face models
    ``teacher_hf`` / ``student_hf`` name, and masked-token evaluation on
    ``self.eval_batch``. Subclasses set ``p``, ``device``, ``vocab_size``, ``seq_len``."""

    metric = "masked_accuracy"

    def evaluate(self, model) -> dict[str, float]:
        return evaluate_mlm(model, self.eval_batch, self.p.eval_batch_size)

    def eval_logits(self, model) -> Iterator[torch.Tensor]:
        return (logits for logits, _ in masked_logits(model, self.eval_batch, self.p.eval_batch_size))

    def teacher_source(self) -> Optional[str]:
        return self.p.pretrained_teacher()

    def _model(self, who: str) -> torch.nn.Module:
        p = self.p
        spec = getattr(p, f"{who}_hf")
        if spec is not None:
            return build_hf_model(spec, self.vocab_size, f"{who}_hf").to(self.device)
        return Encoder(vocab_size=self.vocab_size, outputs=self.vocab_size, max_len=self.seq_len,
                       width=getattr(p, f"{who}_width"), heads=getattr(p, f"{who}_heads"),
                       layers=getattr(p, f"{who}_layers"), mlp_ratio=p.mlp_ratio).to(self.device)

    def teacher_model(self) -> torch.nn.Module:
        return self._model("teacher")

    def student_model(self) -> torch.nn.Module:
        return self._model("student")
