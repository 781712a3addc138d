"""Causal language modelling on a plain-text corpus (lm).

The corpus is read, split and tokenized exactly as for wikipedia-bert
(:mod:`kdbench.tasks.wikipedia`): a file, a folder of ``*.txt`` / ``*.raw`` / ``*.tokens``
files or ``hf:NAME``; the last ``eval_fraction`` of its lines held out; a WordPiece tokenizer
of ``vocab_size`` entries trained on the training lines and cached next to the teacher, or
pinned with ``tokenizer: PATH``. Each split's tokens are concatenated and cut into rows of
``seq_len + 1`` tokens (no special tokens; the remainder is dropped): the model reads
``row[:-1]`` and learns every next token. Training batches draw rows uniformly at random
(with replacement); the evaluation set is the first ``eval_size`` held-out rows.

The first ``prompt_len`` tokens of a row are its prompt: methods that generate (sequence-level
KD, on-policy distillation) continue them to a full row and learn the continuation.

Metric: perplexity on the held-out rows (lower is better), with next-token accuracy.
"""

from __future__ import annotations

from typing import Annotated, Optional

import torch
from pydantic import AfterValidator, Field

from kdbench.api import Batch, Task
from kdbench.errors import UserError
from kdbench.hookspecs import hookimpl
from kdbench.inputs import PathParam
from kdbench.tasks.causal_lm import CausalLMBase, DecoderSizes
from kdbench.tasks.encoder_sizes import EncoderSizes
from kdbench.tasks.hf_models import HFModelParams
from kdbench.tasks.pcfg_lm import lm_recipe
from kdbench.tasks.wikipedia import CORPUS_PATH, PAD, SPECIALS, Corpus, corpus_spec


class LMParams(EncoderSizes, DecoderSizes, HFModelParams):
    corpus: Annotated[str, CORPUS_PATH, AfterValidator(corpus_spec)] = Field(
        description="text file, folder of .txt/.raw/.tokens files, or hf:NAME[:CONFIG]; in a suite, relative to "
                    "the suite's folder, ${ENV_VAR} allowed")
    vocab_size: int = Field(4096, ge=len(SPECIALS) + 1, description="WordPiece vocabulary size (at most)")
    lowercase: bool = Field(True, description="lower-case the text before tokenizing")
    tokenizer: Annotated[Optional[str], PathParam()] = Field(
        None, description="HF tokenizers JSON to use instead of training one (pins the token ids)")
    seq_len: int = Field(64, ge=2, description="input positions of a row (a row has seq_len + 1 tokens)")
    prompt_len: int = Field(8, ge=1, description="tokens of a row that prompt a generating method")
    eval_fraction: float = Field(0.05, gt=0, lt=1, description="share of the corpus lines held out")

    def pretrained_teacher(self) -> Optional[str]:
        return None  # a config only: lm builds Hugging Face models from a config, never from a folder


def pack_rows(ids: torch.Tensor, row_len: int) -> torch.Tensor:
    """Cut a token stream into rows of ``row_len`` tokens (remainder dropped)."""
    n = ids.numel() // row_len
    return ids[: n * row_len].view(n, row_len)


class LMInstance(CausalLMBase):
    """Rows cut from a tokenized corpus; perplexity on the held-out tail."""

    def __init__(self, params: LMParams, seed: int, device: torch.device, cache_dir=None):
        self.p, self.device, self.seq_len = params, device, params.seq_len
        params.check_hf_installed()
        for field in ("teacher_hf", "student_hf"):
            if isinstance(getattr(params, field), str):
                raise UserError(f"{field}: lm builds Hugging Face models from {{type: gpt2, config: {{...}}}}; "
                                f"a pretrained folder is not supported by this task")
        if params.prompt_len > params.seq_len:
            raise UserError(f"prompt_len ({params.prompt_len}) must be at most seq_len ({params.seq_len})")
        corpus = Corpus(params, cache_dir)
        self.tokenizer = corpus.tokenizer
        self.special_tokens = {"pad_token": SPECIALS[PAD], "unk_token": SPECIALS[1]}
        self.vocab_size = self.tokenizer.get_vocab_size()
        self.prompt_len, self.pad_id, self.end_id = params.prompt_len, PAD, None
        self.train_rows = pack_rows(corpus.train_ids, params.seq_len + 1).to(device)
        eval_rows = pack_rows(corpus.eval_ids, params.seq_len + 1)[: params.eval_size].to(device)
        for name, rows in (("training", self.train_rows), ("held-out", eval_rows)):
            if len(rows) == 0:
                raise UserError(f"corpus {params.corpus!r}: the {name} text is shorter than one row of "
                                f"{params.seq_len + 1} tokens; lower seq_len or eval_fraction, or use more text")
        self.eval_batch = self.rows_to_batch(eval_rows)

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        rows = torch.randint(0, len(self.train_rows), (batch_size,), generator=generator, device=self.device)
        return self.rows_to_batch(self.train_rows[rows])


class LM(Task):
    """Causal language modelling on a text corpus with a decoder teacher and student."""

    name = "lm"
    version = "1"
    Params = LMParams
    description = "causal language modelling on a plain-text corpus; perplexity (lower is better)"

    def build(self, params, seed, device, cache_dir=None):
        return LMInstance(params, seed, device, cache_dir)

    # GPT-2 small's shape (12 x 768, 12 heads) over the corpus's WordPiece vocabulary, 1024-token rows: a GPU size
    presets = {"paper": {
        "params": {"vocab_size": 30_522, "seq_len": 1024, "eval_size": 512, "teacher_layers": 12, "teacher_heads": 12,
                   "teacher_width": 768, "student_layers": 6, "student_heads": 12, "student_width": 768},
        "teacher": {"lr": 6e-4, "batch_size": 256, "steps": 100_000, "checkpoint_every": 10_000},
        "student": {"lr": 6e-4, "batch_size": 256}}}

    def teacher_recipe(self, params):
        return lm_recipe(steps=2000, lr=2e-3, batch_size=32, checkpoint_every=200)

    def student_recipe(self, params):
        return lm_recipe(steps=1000, lr=2e-3, batch_size=32)


@hookimpl
def kdbench_register_tasks():
    return [LM]
