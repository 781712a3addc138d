"""An opt-in cache of the final teacher's top-k log-probabilities (``tasks[i].teacher_logits: {top_k: K}``).

:class:`TopKTeacher` stands in for the final teacher. A plain logits call
``teacher(x, mask=m)`` is answered from the cache; every other call (``upto``,
``layers``, ``internals``, anything else) goes to the real teacher unchanged.
An entry is keyed by the content of the batch (the sha256 of the input ids and the
mask, with their shapes and dtypes, the device type and autocast state), so every
method and seed that consumes the same batch of the same stream shares it, across
processes. The store is a folder of the teacher's own folder, whose id already
names the teacher: ``OUT/teachers/<teacher id>/logits-top<K>/<key>.pt`` holds the
top-k log-probabilities (float32, from ``log_softmax`` of the full logits) and
their token indices; ``<key>.sha256`` records its sha256, checked before every
use: an entry that does not match is discarded with a warning and recomputed.

**The approximation** (top-k with a tail bucket, spread evenly): the teacher's
distribution ``p`` over ``V`` tokens is replaced by ``p~``, equal to ``p`` on its
``k`` most likely tokens, and giving each of the other ``V - k`` tokens
``tail / (V - k)``, where ``tail = 1 - sum of the top-k probabilities`` (clamped
at a tiny positive value). ``p~`` is a proper distribution with full support, so
forward KL, reverse KL, JSD and TV all stay finite. The stand-in returns
``log p~`` as its logits (``log_softmax`` of them is ``log p~`` again). Per position
``|p~ - p|_1 <= 2 tail``, and a forward-KL loss against a student ``q`` moves by
at most ``tail * (log(V - k) + 2 max |log q|)`` (see tests/test_logit_cache.py). A
temperature is applied to ``log p~`` as to logits, so at ``T != 1`` the tail is
tempered as one bucket. On a miss the teacher runs, the entry is stored, and the
*reconstruction* is returned: a hit and a miss give bit-identical tensors.

FLOPs: budgets do not change. While the engine measures a phase's step FLOPs
(:func:`measuring`) the stand-in runs the real teacher, so a cached run gets the
steps of an uncached one and the teacher forward stays charged to the budget;
what the cache saves in fact is reported beside it (``saved_flops``: hits times
the FLOPs of one teacher forward on a batch).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from kdbench.files import atomic_torch_save, atomic_write_text
from kdbench.run.budget import StepFlopCounter
from kdbench.run.integrity import sha256_file

log = logging.getLogger("kdbench")

FORMAT = "1"  # of the entries: part of every key
TAIL_FLOOR = 1e-30  # the least tail mass: its log stays finite
APPROXIMATION = "top-k with a tail bucket spread evenly over the other tokens"


def folder_of(teacher_folder: Path, top_k: int) -> Path:
    """Where the entries of a teacher's top-``top_k`` cache live."""
    return Path(teacher_folder) / f"logits-top{top_k}"


def _bytes_of(t: torch.Tensor) -> bytes:
    flat = t.detach().contiguous().reshape(-1).cpu()
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def batch_key(x: torch.Tensor, mask: Optional[torch.Tensor]) -> str:
    """The sha256 naming a batch's entry: the input ids and the mask (bytes, shapes, dtypes), the device
    type and the autocast state (a bf16 teacher's outputs are not an fp32 one's)."""
    kind = x.device.type
    autocast = torch.is_autocast_enabled(kind) and str(torch.get_autocast_dtype(kind))
    digest = hashlib.sha256(f"kdbench-logits/{FORMAT}/{kind}/{autocast}".encode())
    for t in (x, mask):
        if t is None:
            digest.update(b"|none")
            continue
        digest.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(_bytes_of(t))
    return digest.hexdigest()


def top_k_entry(logits: torch.Tensor, k: int) -> dict:
    """What an entry stores of a teacher output ``[..., V]``: the top-``k`` log-probabilities (float32,
    from ``log_softmax`` of the full logits) and their indices, on the CPU, and ``V``."""
    vocab = logits.shape[-1]
    log_p = F.log_softmax(logits.detach().float(), dim=-1)
    values, indices = log_p.topk(min(k, vocab), dim=-1)
    return {"values": values.cpu().contiguous(), "indices": indices.cpu().contiguous(), "vocab": int(vocab)}


def reconstruct(values: torch.Tensor, indices: torch.Tensor, vocab: int) -> torch.Tensor:
    """``log p~`` (see the module docstring): ``values`` at ``indices``, every other of the ``vocab``
    entries ``log(tail / (vocab - k))``."""
    k = values.shape[-1]
    if k >= vocab:
        return torch.empty(*values.shape[:-1], vocab, dtype=values.dtype, device=values.device) \
            .scatter_(-1, indices, values)
    tail = (1 - values.exp().sum(-1, keepdim=True)).clamp_min(TAIL_FLOOR)
    fill = tail.log() - math.log(vocab - k)
    return fill.expand(*values.shape[:-1], vocab).clone().scatter_(-1, indices, values)


class LogitStore:
    """The entries of one teacher's top-k cache, with their sha256 (see the module docstring)."""

    def __init__(self, folder: Path, top_k: int):
        self.folder, self.top_k = Path(folder), top_k

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.pt", self.folder / f"{key}.sha256"

    def read(self, key: str) -> tuple[Optional[dict], Optional[str]]:
        """(the entry, None) if it is stored and verifies; (None, why) if it is there but does not;
        (None, None) if it is not there (or not yet complete: its sha256 is written after it)."""
        path, digest = self._paths(key)
        if not path.exists() or not digest.exists():
            return None, None
        try:
            if sha256_file(path) != digest.read_text().strip():
                return None, "does not match the sha256 kdbench recorded when writing it"
            entry = torch.load(path, map_location="cpu", weights_only=True)
            self._check(entry)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, it is recomputed
            return None, " ".join(f"unreadable ({type(exc).__name__}: {exc})".split())[:200]
        return entry, None

    def _check(self, entry) -> None:
        if not isinstance(entry, dict) or set(entry) != {"values", "indices", "vocab"}:
            raise ValueError("not a top-k entry")
        values, indices, vocab = entry["values"], entry["indices"], entry["vocab"]
        if values.dtype != torch.float32 or values.shape != indices.shape or \
                values.shape[-1] != min(self.top_k, vocab):
            raise ValueError("shapes or dtype differ from a top-k entry's")

    def write(self, key: str, entry: dict) -> dict:
        """Store ``entry`` unless another process stored this key first; return the stored entry (the
        first writer's), so every consumer of a batch reads the same tensors. A stored file that does
        not verify is discarded with a warning and replaced."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path, digest = self._paths(key)
        with FileLock(str(self.folder / ".lock")):
            stored, why = self.read(key)
            if stored is not None:
                return stored
            if why is not None:
                log.warning(f"{path}: cached teacher logits that cannot be trusted ({why}); discarded, recomputed")
                for p in (path, digest):
                    p.unlink(missing_ok=True)
            atomic_torch_save(entry, path)
            atomic_write_text(digest, sha256_file(path) + "\n")
        return entry


class TopKTeacher(nn.Module):
    """The final teacher read through a :class:`LogitStore` (see the module docstring): a plain
    ``teacher(x, mask=m)`` returns the reconstruction ``log p~``; any other call, and every call while
    ``measuring`` (FLOPs are counted on the real teacher), goes to the teacher. Counts ``hits`` and ``misses``."""

    def __init__(self, teacher: nn.Module, store: LogitStore):
        super().__init__()
        self.teacher, self.store = teacher, store
        self.measuring, self.hits, self.misses = False, 0, 0

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # the teacher's own attributes (num_layers, ...): methods may read them
            return getattr(self._modules["teacher"], name)

    def forward(self, x: torch.Tensor, *args, **kwargs):
        if self.measuring or args or set(kwargs) - {"mask"}:
            return self.teacher(x, *args, **kwargs)
        mask = kwargs.get("mask")
        key = batch_key(x, mask)
        entry, _ = self.store.read(key)  # a damaged entry is named and replaced under the lock, below
        if entry is None:
            with torch.no_grad():
                out = self.teacher(x, mask=mask)
            entry = self.store.write(key, top_k_entry(out, self.store.top_k))
            self.misses += 1
        else:
            self.hits += 1
        device = x.device
        return reconstruct(entry["values"].to(device), entry["indices"].to(device), entry["vocab"])


class CachedLogits:
    """A :class:`kdbench.api.TeacherAccess` whose ``final()`` is a :class:`TopKTeacher` over ``access``'s
    final teacher; ``at(step)`` checkpoints, and everything else, are ``access``'s."""

    def __init__(self, access, teacher_folder: Path, top_k: int):
        self.access, self.top_k = access, top_k
        self.store = LogitStore(folder_of(teacher_folder, top_k), top_k)
        self._final: Optional[TopKTeacher] = None

    def __getattr__(self, name: str):
        return getattr(self.__dict__["access"], name)

    def final(self) -> TopKTeacher:
        if self._final is None:
            self._final = TopKTeacher(self.access.final(), self.store)
        return self._final

    def at(self, step: int) -> nn.Module:
        return self.access.at(step)

    def stats(self, forward_flops: int) -> dict:
        """A run summary's ``teacher_logits``: k, hits, misses and the FLOPs the hits saved."""
        hits, misses = (self._final.hits, self._final.misses) if self._final is not None else (0, 0)
        return {"top_k": self.top_k, "approximation": APPROXIMATION, "hits": hits, "misses": misses,
                "saved_flops": hits * int(forward_flops)}


@contextlib.contextmanager
def measuring(teacher):
    """While FLOPs are measured, ``teacher`` (a :class:`CachedLogits`; anything else is left alone) runs
    the real final teacher, so a cached run is charged, and allotted steps, as an uncached one."""
    if not isinstance(teacher, CachedLogits):
        yield
        return
    wrapped = teacher.final()
    wrapped.measuring = True
    try:
        yield
    finally:
        wrapped.measuring = False


def forward_flops(model: nn.Module, batch) -> int:
    """FLOPs of one plain forward of ``model`` on ``batch`` (counted as budgets are: math attention)."""
    devices = [batch.inputs.device] if batch.inputs.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        with StepFlopCounter(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
            model(batch.inputs, mask=batch.mask)
    return int(counter.get_total_flops())
