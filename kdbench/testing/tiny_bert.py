"""A tiny pretrained BERT folder made from the shipped corpus excerpt: to try the Hugging Face suites
(``suites/hf/distil-bert.yaml``) and to test them, with nothing downloaded.

:func:`make_tiny_bert` writes what ``save_pretrained`` writes for a real BERT:

- a WordPiece tokenizer trained with HF ``tokenizers`` on the corpus, numbered the
  way ``bert-base-uncased`` is (``[PAD]`` 0, then ordinary tokens, ``[UNK] [CLS]
  [SEP] [MASK]`` from id 100 on, so the task must read the special ids from the
  tokenizer), wrapped as a ``PreTrainedTokenizerFast``;
- a ``BertForMaskedLM`` (4 layers, width 64 by default) with random weights, then,
  with ``steps > 0``, trained that many MLM steps on the corpus by kdbench's own
  engine (the teacher recipe below), as a stand-in for pretraining.

``python scripts/make-tiny-bert.py OUT_FOLDER [--steps N]`` runs it from the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from tokenizers import Tokenizer, models, processors

from kdbench.api import Recipe
from kdbench.models.hf import import_transformers, quiet_progress
from kdbench.run.engine import progress_every, progress_recorder, train
from kdbench.run.teachers import teacher_job
from kdbench.streams import derive_seed
from kdbench.tasks.wikipedia import (SPECIAL_TOKENS, SPECIALS, WikipediaInstance, WikipediaParams, read_corpus,
                                     train_tokenizer)

CORPUS = Path(__file__).resolve().parents[2] / "data" / "wikitext-2-excerpt"
SEQ_LEN = 64
#: how the tiny BERT is pretrained when asked (AdamW, linear decay after 6% warm-up)
PRETRAIN = Recipe(optimizer="adamw", lr=2e-3, betas=(0.9, 0.98), weight_decay=0.01, schedule="linear", warmup=0.06,
                  batch_size=32, steps=1)


def bert_style_tokenizer(lines: list[str], vocab_size: int):
    """A lower-casing WordPiece ``tokenizers.Tokenizer`` trained on ``lines``, numbered like
    bert-base-uncased: ``[PAD]`` 0, ordinary tokens, ``[UNK] [CLS] [SEP] [MASK]`` at 100-103 (or
    after the ordinary tokens of a smaller vocabulary), ordinary tokens again; ``[CLS] ... [SEP]``
    added around a text by its post-processor."""
    trained = train_tokenizer(lines, vocab_size, lowercase=True)
    ordinary = sorted(t for t in trained.get_vocab() if t not in SPECIALS)
    cut = min(99, len(ordinary))
    order = ["[PAD]", *ordinary[:cut], "[UNK]", "[CLS]", "[SEP]", "[MASK]", *ordinary[cut:]]
    ids = {token: i for i, token in enumerate(order)}
    tokenizer = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer, tokenizer.decoder = (
        trained.normalizer, trained.pre_tokenizer, trained.decoder)
    tokenizer.add_special_tokens(list(SPECIALS))  # already in the vocabulary: they keep their ids
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    return tokenizer


def make_tiny_bert(folder: str | Path, corpus: str | Path = CORPUS, *, vocab_size: int = 1000, width: int = 64,
                   layers: int = 4, heads: int = 4, steps: int = 0, seed: int = 0,
                   log: Optional[Callable[[str], None]] = None,
                   progress: Optional[Callable[[int, int], None]] = None) -> Path:
    """Write a tiny BERT (model and tokenizer, ``save_pretrained``) into ``folder``; with ``steps``,
    train it that many MLM steps on ``corpus`` first, reporting ``(steps done, steps)`` to ``progress``
    (and each evaluation to its ``record``, as a :class:`kdbench.progress.JobProgress` takes them).
    Return the folder. (The keyword arguments are the model's sizes, its pretraining and its reporting,
    each with a default, hence their number.)"""
    transformers = import_transformers()
    folder = Path(folder)
    tokenizer = bert_style_tokenizer(read_corpus(str(corpus)), vocab_size)
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=SEQ_LEN,
                                                   **SPECIAL_TOKENS)
    wrapped.save_pretrained(str(folder))
    config = transformers.BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=width,
                                     num_hidden_layers=layers, num_attention_heads=heads,
                                     intermediate_size=4 * width, max_position_embeddings=SEQ_LEN,
                                     pad_token_id=tokenizer.token_to_id("[PAD]"))
    torch.manual_seed(seed)
    model = transformers.BertForMaskedLM(config)
    with quiet_progress():
        model.save_pretrained(str(folder))
    if steps > 0:
        task = WikipediaInstance(WikipediaParams(corpus=str(corpus), teacher_hf=str(folder), seq_len=SEQ_LEN),
                                 derive_seed("task", seed), torch.device("cpu"))
        job = teacher_job(task, seed, PRETRAIN.model_copy(update={"steps": steps}), eval_points=2,
                          on_step=progress_every(progress))
        job.on_record = progress_recorder(progress, task.metric)
        result = train(job)
        if log is not None:
            start, end = result.curve[0]["masked_accuracy"], result.curve[-1]["masked_accuracy"]
            log(f"trained {steps} steps: held-out masked accuracy {start:.3f} -> {end:.3f}")
        job.model.save_pretrained(folder)
    return folder
