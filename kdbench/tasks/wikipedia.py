"""BERT-style masked language modelling on a plain-text corpus (wikipedia-bert).

The corpus (``corpus`` param) is read from:

- a text file, or a folder: every ``*.txt``, ``*.raw`` and ``*.tokens`` file
  below it, in sorted path order (WikiText's layouts work: ``train.txt``,
  ``valid.txt``, ... or ``wiki.train.raw``, ...). Relative paths resolve
  against the current directory. The whole corpus is held in memory.
- ``hf:NAME`` or ``hf:NAME:CONFIG`` (e.g. ``hf:wikitext:wikitext-103-raw-v1``):
  the ``train`` split's ``text`` column through HF ``datasets``, for a user who
  has that package and internet access (never used by the tests).

Lines are the units: blank lines are dropped, the last ``eval_fraction`` of the
lines is held out for evaluation and the rest trains. A WordPiece tokenizer
(HF ``tokenizers``, BERT normalisation and pre-tokenisation, ``vocab_size``
entries with the specials ``[PAD] [UNK] [CLS] [SEP] [MASK]`` as ids 0-4) is
trained on the training lines; it and the token ids are cached next to the
teacher (``Task.build``'s ``cache_dir``), keyed by a hash of the corpus text
and the tokenizer settings, so a teacher and its students always share one
tokenizer. Training is not bit-reproducible across fresh caches: the
``tokenizers`` trainer breaks ties between equally frequent merges in hash-map
order (two trainings on WikiText-2 at 2,000 entries differed by one entry).
``tokenizer: PATH`` (relative to the current directory) pins a tokenizer JSON,
e.g. a cached one, instead.

With a pretrained teacher (``teacher_hf: FOLDER``, a ``save_pretrained`` folder,
see :mod:`kdbench.tasks.hf_models`) the teacher's own tokenizer, saved in that
folder with ``tokenizer.save_pretrained``, is the task's: it tokenizes the
corpus, its special tokens (and their ids, whatever they are) are the task's,
the vocabulary is the teacher's, and the student shares it; ``vocab_size``,
``lowercase`` and ``tokenizer`` are then not given.

Each split's tokens are concatenated and cut into sequences ``[CLS] +
(seq_len - 2) tokens + [SEP]``; the remainder is dropped. Training batches draw
sequences uniformly at random (with replacement) and mask them afresh
(:mod:`kdbench.tasks.mlm`, specials never masked; random replacements are
ordinary tokens); the evaluation set is the first ``eval_size`` held-out
sequences, masked once from the data seed. Metric: masked-token accuracy.

Reference models (curriculum-extraction paper): teacher 12 blocks, 12 heads,
768-d; student 256-d, 4 heads. The student's depth is not stated there: 4
blocks by default (set ``student_layers``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Optional

import torch
from filelock import FileLock
from pydantic import AfterValidator, Field, model_validator
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from kdbench.api import Batch, Recipe, Task
from kdbench.errors import UserError
from kdbench.files import atomic_torch_save, atomic_write_text
from kdbench.hookspecs import hookimpl
from kdbench.inputs import PathParam
from kdbench.streams import substream
from kdbench.tasks.encoder_sizes import EncoderSizes
from kdbench.tasks.hf_models import load_pretrained_tokenizer
from kdbench.tasks.mlm import Masker, MLMInstance, MLMParams

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(len(SPECIALS))
# the roles of kdbench's own WordPiece specials, named as Hugging Face tokenizers name them
SPECIAL_TOKENS = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIALS))
SUFFIXES = (".txt", ".raw", ".tokens")
# a corpus path names files (hashed into run ids); hf:NAME does not
CORPUS_PATH = PathParam(when=lambda spec: not spec.startswith("hf:"), files=lambda path: corpus_files(str(path)))


def corpus_spec(spec: str) -> str:
    """A corpus param's check, run when a suite is validated (before anything is written): a path must
    name text files (:func:`corpus_files`); ``hf:NAME`` is read later."""
    if not spec.startswith("hf:"):
        try:
            corpus_files(spec)
        except UserError as exc:
            raise ValueError(str(exc)) from None
    return spec


class WikipediaParams(EncoderSizes, MLMParams):
    corpus: Annotated[str, CORPUS_PATH, AfterValidator(corpus_spec)] = Field(
        description="text file, folder of .txt/.raw/.tokens files, or hf:NAME[:CONFIG]; in a suite, relative to "
                    "the suite's folder, ${ENV_VAR} allowed")
    # the defaults are suites/cpu/wikipedia-bert.yaml's CPU size; the papers' (BERT-base) is the preset "paper"
    vocab_size: int = Field(4096, ge=len(SPECIALS) + 1, description="WordPiece vocabulary size (at most)")
    lowercase: bool = Field(True, description="lower-case the text before tokenizing (BERT uncased)")
    tokenizer: Annotated[Optional[str], PathParam()] = Field(
        None, description="HF tokenizers JSON to use instead of training one (e.g. a cached wordpiece-*.json): "
                          "pins the token ids")
    seq_len: int = Field(64, ge=3, description="tokens per sequence, [CLS] and [SEP] included")
    eval_fraction: float = Field(0.05, gt=0, lt=1, description="share of the corpus lines held out")
    eval_size: int = Field(256, ge=1, description="held-out sequences evaluated (at most)")
    eval_batch_size: int = Field(128, ge=1, description="evaluation chunk (memory only, not results)")
    teacher_layers: int = Field(4, ge=1, description="teacher transformer blocks")
    teacher_heads: int = Field(4, ge=1, description="teacher attention heads")
    teacher_width: int = Field(128, ge=1, description="teacher model width (heads x head dimension)")
    student_layers: int = Field(2, ge=1, description="student transformer blocks")
    student_heads: int = Field(2, ge=1, description="student attention heads")
    student_width: int = Field(64, ge=1, description="student model width (heads x head dimension)")
    mlp_ratio: int = Field(4, ge=1, description="MLP hidden width / model width")

    @model_validator(mode="after")
    def _pretrained_tokenizer(self):
        # compared with the defaults, not model_fields_set: a run's params come back fully written out
        fields = type(self).model_fields
        given = [name for name in ("tokenizer", "vocab_size", "lowercase") if getattr(self, name) != fields[name].default]
        if self.pretrained_teacher() and given:
            raise ValueError(f"{', '.join(given)}: the pretrained teacher's tokenizer (teacher_hf) is the task's; "
                             "leave these out")
        return self


def corpus_files(spec: str) -> list[Path]:
    """The files a corpus path names; a clear error when there are none."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise UserError(f"corpus {spec!r}: folder {path.resolve()} has no {'/'.join(SUFFIXES)} files")
        return files
    where = "" if str(path.resolve()) == spec else f" ({path.resolve()})"
    raise UserError(f"corpus {spec!r}: no such file or folder{where}; give `corpus:` a text file or folder (the "
                    "bundled suites read KDBENCH_WIKI_CORPUS), or kdbench's data/wikitext-2-excerpt for a small test")


def read_corpus(spec: str) -> list[str]:
    """The corpus's non-blank lines, stripped."""
    if spec.startswith("hf:"):
        lines = _hf_lines(spec)
    else:
        lines = []
        for f in corpus_files(spec):
            lines.extend(f.read_text(encoding="utf-8", errors="replace").splitlines())
    lines = [s for s in (line.strip() for line in lines) if s]
    if not lines:
        raise UserError(f"corpus {spec!r} is empty (no non-blank lines)")
    return lines


def _hf_lines(spec: str) -> list[str]:
    _, _, rest = spec.partition(":")
    name, _, config = rest.partition(":")
    try:
        # optional dependency: datasets, for `hf:` corpora only
        import datasets
    except ImportError:
        raise UserError(f"corpus {spec!r}: loading through HF datasets needs `pip install datasets`") from None
    try:
        data = datasets.load_dataset(name, config or None, split="train")
    except Exception as exc:
        raise UserError(f"corpus {spec!r}: datasets.load_dataset({name!r}, {config or None!r}) failed: {exc}") from exc
    if "text" not in data.column_names:
        raise UserError(f"corpus {spec!r}: the dataset has no 'text' column (has {data.column_names})")
    return data["text"]


def train_tokenizer(lines: list[str], vocab_size: int, lowercase: bool):
    """A BERT-style WordPiece tokenizer trained on ``lines``, the same one on every call.

    The trainer (HF ``tokenizers``, which trains WordPiece with BPE) numbers the
    word-continuing pieces (``##e``) in hash-map order, which changes from process to
    process, and breaks ties between equally frequent merges by those numbers: the same
    corpus gave different vocabularies (huggingface/tokenizers#1794). So every ``##c``
    piece the corpus can produce is handed to the trainer up front, in sorted order, and
    the result is numbered specials first, then the rest sorted.
    """
    def bert_wordpiece(vocab=None):
        tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=SPECIALS[UNK]) if vocab else
                              models.WordPiece(unk_token=SPECIALS[UNK]))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        return tokenizer

    tokenizer = bert_wordpiece()
    continuing = {"##" + c for line in lines
                  for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(line))
                  for c in word[1:]}
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[*SPECIALS, *sorted(continuing)],
                                        show_progress=False)
    tokenizer.train_from_iterator(lines, trainer)
    vocab = tokenizer.get_vocab()
    ordered = [*SPECIALS, *sorted(t for t in vocab if t not in SPECIALS)]
    tokenizer = bert_wordpiece({t: i for i, t in enumerate(ordered)})
    tokenizer.add_special_tokens(list(SPECIALS))
    return tokenizer


def pack(ids: torch.Tensor, seq_len: int, cls: int = CLS, sep: int = SEP) -> torch.Tensor:
    """Cut a token stream into ``[CLS] + seq_len - 2 tokens + [SEP]`` rows (remainder dropped)."""
    body = seq_len - 2
    n = ids.numel() // body
    rows = ids[: n * body].view(n, body)
    return torch.cat([torch.full((n, 1), cls, dtype=ids.dtype), rows, torch.full((n, 1), sep, dtype=ids.dtype)], 1)


class Corpus:
    """The tokenizer and the two token streams of a corpus, built once and cached in ``cache_dir``.

    Builds of the same cache (teacher and student jobs running at once) take a
    file lock, so they all use the tokenizer the first one trained. ``pretrained``
    (a pretrained teacher's tokenizer JSON) is used as it is, like a pinned one.
    """

    def __init__(self, p: WikipediaParams, cache_dir: Optional[Path], pretrained: Optional[str] = None):
        lines = read_corpus(p.corpus)
        split = len(lines) - max(1, round(p.eval_fraction * len(lines)))
        if split < 1:
            raise UserError(f"corpus {p.corpus!r}: {len(lines)} non-blank line(s) cannot be split into "
                            f"training and held-out text (eval_fraction {p.eval_fraction})")
        self.train_lines, self.eval_lines = lines[:split], lines[split:]
        pinned = pretrained or (_read_pinned(p.tokenizer) if p.tokenizer else None)
        self.specials_first = pretrained is None  # kdbench's own numbering: the specials are ids 0-4
        key = hashlib.sha256(repr((hashlib.sha256("\n".join(lines).encode()).hexdigest(), p.vocab_size,
                                   p.lowercase, p.eval_fraction, pinned)).encode()).hexdigest()[:16]
        if cache_dir is None:
            self._build(p, pinned)
            return
        cache = Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        tok_path, ids_path = cache / f"wordpiece-{key}.json", cache / f"tokens-{key}.pt"
        with FileLock(str(cache / f".wordpiece-{key}.lock")):
            if tok_path.exists() and ids_path.exists():

                self.tokenizer = Tokenizer.from_file(str(tok_path))
                saved = torch.load(ids_path, map_location="cpu", weights_only=True)
                self.train_ids, self.eval_ids = saved["train"], saved["eval"]
                return
            self._build(p, pinned)
            atomic_write_text(tok_path, self.tokenizer.to_str(pretty=True))
            atomic_torch_save({"train": self.train_ids, "eval": self.eval_ids}, ids_path)

    def _build(self, p: WikipediaParams, pinned: Optional[str]) -> None:
        if pinned is not None:

            self.tokenizer = Tokenizer.from_str(pinned)
        else:
            self.tokenizer = train_tokenizer(self.train_lines, p.vocab_size, p.lowercase)
        for i, special in enumerate(SPECIALS):
            if self.specials_first and self.tokenizer.token_to_id(special) != i:
                raise UserError(f"tokenizer {p.tokenizer!r}: needs the special tokens {list(SPECIALS)} as ids 0-4")
        self.train_ids, self.eval_ids = (self._encode(part) for part in (self.train_lines, self.eval_lines))

    def _encode(self, lines: list[str]) -> torch.Tensor:
        encoded = self.tokenizer.encode_batch(lines, add_special_tokens=False)
        return torch.tensor([i for e in encoded for i in e.ids], dtype=torch.int32)


def _read_pinned(path: str) -> str:
    try:
        text = Path(path).read_text()

        Tokenizer.from_str(text)
    except OSError as exc:
        raise UserError(f"tokenizer {path!r}: cannot read it: {exc}") from exc
    except Exception as exc:
        raise UserError(f"tokenizer {path!r}: not an HF tokenizers JSON file: {exc}") from exc
    return text


class WikipediaInstance(MLMInstance):
    """Packed WordPiece sequences of a corpus, masked BERT-style; evaluation on the held-out tail."""

    def __init__(self, params: WikipediaParams, seed: int, device: torch.device, cache_dir=None):
        self.p, self.device, self.seq_len = params, device, params.seq_len
        params.check_hf_installed()
        folder = params.pretrained_teacher()
        pretrained = load_pretrained_tokenizer(folder) if folder else None
        corpus = Corpus(params, cache_dir, pretrained.json if pretrained else None)
        self.tokenizer = corpus.tokenizer
        self.special_tokens = pretrained.special_tokens if pretrained else dict(SPECIAL_TOKENS)
        ids = {role: self.tokenizer.token_to_id(token) for role, token in self.special_tokens.items()}
        tokens = self.tokenizer.get_vocab_size()
        self.vocab_size = pretrained.model_vocab_size if pretrained else tokens
        if tokens > self.vocab_size:
            raise UserError(f"teacher_hf: {folder}: its tokenizer has {tokens} tokens, more than the model's "
                            f"vocab_size {self.vocab_size}")
        self.special_ids = torch.tensor(sorted(set(ids.values())), device=device)
        self.train_seqs = pack(corpus.train_ids, params.seq_len, ids["cls_token"], ids["sep_token"]).to(device)
        eval_seqs = pack(corpus.eval_ids, params.seq_len, ids["cls_token"], ids["sep_token"])
        eval_seqs = eval_seqs[: params.eval_size].to(device).long()
        for name, seqs in (("training", self.train_seqs), ("held-out", eval_seqs)):
            if len(seqs) == 0:
                raise UserError(f"corpus {params.corpus!r}: the {name} text is shorter than one sequence of "
                                f"{params.seq_len} tokens; lower seq_len or eval_fraction, or use more text")
        n_special = len(self.special_ids)
        if self.special_ids.tolist() == list(range(n_special)):  # specials first: the ordinary ids are a range
            self.masker = Masker.from_params(params, ids["mask_token"], n_special, tokens)
        else:
            every = torch.arange(tokens, device=device)
            self.masker = Masker.from_params(params, ids["mask_token"], 0, tokens,
                                             ordinary=every[~torch.isin(every, self.special_ids)])
        g = torch.Generator(device=device).manual_seed(seed)
        self.eval_batch = self.masker(eval_seqs, self.maskable(eval_seqs), substream(g, "masking"))

    def maskable(self, tokens: torch.Tensor) -> torch.Tensor:
        """Where ``tokens`` are ordinary tokens (never a special one)."""
        return ~torch.isin(tokens, self.special_ids)

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        rows = torch.randint(0, len(self.train_seqs), (batch_size,), generator=generator, device=self.device)
        tokens = self.train_seqs[rows].long()
        return self.masker(tokens, self.maskable(tokens), substream(generator, "masking"))


class WikipediaBert(Task):
    """BERT-style MLM on a text corpus (Wikipedia in the papers; WikiText works)."""

    name = "wikipedia-bert"
    version = "2"  # 2: the trained tokenizer is the same on every run (it was not: see train_tokenizer)
    Params = WikipediaParams
    description = "masked language modelling on a plain-text corpus with a WordPiece tokenizer"

    def build(self, params, seed, device, cache_dir=None):
        return WikipediaInstance(params, seed, device, cache_dir)

    # the papers' size: BERT-base (12 x 768, WordPiece 30,522, 128 tokens) pre-trained as Devlin et al.: AdamW
    # 1e-4, weight decay 0.01, 1% warm-up, linear decay, batch 256; checkpoints at MultiBERTs' 20k-step cadence
    presets = {"paper": {
        "params": {"vocab_size": 30_522, "seq_len": 128, "eval_size": 512, "teacher_layers": 12, "teacher_heads": 12,
                   "teacher_width": 768, "student_layers": 4, "student_heads": 4, "student_width": 256},
        "teacher": {"lr": 1e-4, "betas": [0.9, 0.999], "schedule": "linear", "warmup": 0.01, "batch_size": 256,
                    "steps": 1_000_000, "checkpoint_every": 20_000},
        "student": {"lr": 5e-4, "batch_size": 256}}}

    def teacher_recipe(self, params):
        return Recipe(optimizer="adamw", lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01, schedule="cosine",
                      warmup=0.06, batch_size=32, steps=3000, checkpoint_every=300)

    def student_recipe(self, params):
        return Recipe(optimizer="adamw", lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01, schedule="cosine",
                      warmup=0.06, batch_size=32)


@hookimpl
def kdbench_register_tasks():
    return [WikipediaBert]
