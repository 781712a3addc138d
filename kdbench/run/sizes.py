"""Every size bounded before anything trains: memory and time estimated for every teacher and run.

Validation (:func:`kdbench.run.validation.check_runs`, hence ``validate``, ``plan`` and ``run``)
calls these checks for every task entry and every (task, method) pair before any teacher trains:

1. The models, before they are allocated: the task's teacher and student are built on the meta
   device (shapes only: no memory, and a model stops being built as soon as its parameters pass the
   memory limit, so ``depth: 100000`` is refused in a second). Training holds
   :data:`STATE_COPIES` copies of a model's parameters (weights, gradients, Adam's two moments).
2. One step, from the probe: a step of the teacher's and of each method's phases at two small
   batches, its peak memory measured (tensors alive at once); activations grow linearly with the
   batch, so the two give the memory of a step at the real ``batch_size``.
3. Time: allotted steps over :data:`MAX_STEPS`, or FLOPs that even :data:`FAST_FLOPS` FLOP/s
   would not finish within :data:`MAX_SECONDS`, are a typo.

The memory limit is what the device has (RAM on the CPU, the GPU's memory on CUDA), or the
environment variable ``KDBENCH_MEMORY_LIMIT`` (bytes, or ``512MB``, ``2GB``...) when set: lower to
leave room for other work, higher when an estimate overshoots (attention is measured in full).
Whatever does not fit is a :class:`UserError` of one line naming the field, the estimate and the
allowed range. A task that cannot even be built (its data does not fit) says so in one line too.
"""

from __future__ import annotations

import os
import re
import weakref
from typing import Callable, Optional

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from kdbench.api import Phase, TaskInstance
from kdbench.errors import UserError
from kdbench.run.budget import probe_batch
from kdbench.run.engine import trainable_parameters, training_only

MAX_STEPS = 10**9  # more steps than any job could take: the number is a typo
MAX_SECONDS = 365 * 86400  # a job estimated to take longer than a year is a typo
FAST_FLOPS = 1e15  # FLOP/s, more than one device sustains: the time estimate is a lower bound
STATE_COPIES = 4  # a trained model's weights, gradients and Adam's two moments
LIMIT_VARIABLE = "KDBENCH_MEMORY_LIMIT"
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_bytes(text: str) -> int:
    """``"2GB"`` -> 2e9, ``"512MiB"``, ``"1e9"``, ``"123"`` (bytes); a UserError for anything else."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgt]i?)?b?\s*", text, re.IGNORECASE)
    if match is None:
        raise UserError(f"{LIMIT_VARIABLE}: {text[:50]!r} is not a size (allowed: bytes, or a number with "
                        "KB, MB, GB or TB)")
    return int(float(match[1]) * _UNITS[(match[2] or "").lower()])


def memory_limit(device: Optional[torch.device]) -> Optional[int]:
    """Bytes ``device`` has (None: unknown, e.g. runs that train on a cluster), or
    ``KDBENCH_MEMORY_LIMIT`` when set."""
    if os.environ.get(LIMIT_VARIABLE):  # the user's word wins, above the device's too: an estimate can overshoot
        return parse_bytes(os.environ[LIMIT_VARIABLE])
    if device is not None and device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    if device is not None and device.type == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None


def size_text(size: float) -> str:
    """``1.25 GB``, ``4e+05 GB``, ``264 bytes``: three significant digits (1 GB = 10^9 bytes)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} bytes"


def build_failure(exc: BaseException) -> Optional[str]:
    """A task's build that ran out of memory, in one line (torch's first line, without its C++
    stack frames), or None for any other failure."""
    first = str(exc).strip().split("\n")[0]
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "allocate" in first):
        asked = re.search(r"allocate (\d+) bytes", first)
        return f"its data does not fit: {size_text(int(asked[1])) + ' in one tensor' if asked else first[:200]}"
    return None


class _TooBig(Exception):
    """A model's parameters passed the limit while it was built on the meta device (args: their bytes)."""


_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint, torch.arange,
              torch.eye, torch.linspace, torch.tensor}
_MOVES = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu}


class _OnMeta(TorchFunctionMode):
    """Tensors created on the meta device (shapes, no memory), moves ignored; stops with
    :class:`_TooBig` once the parameters created pass ``limit`` bytes."""

    def __init__(self, limit: Optional[int]):
        super().__init__()
        self.limit, self.bytes = limit, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MOVES:
            return args[0]
        if "device" in kwargs or func in _FACTORIES:
            kwargs = {**kwargs, "device": "meta"}
        out = func(*args, **kwargs)
        if isinstance(out, torch.nn.Parameter):
            self.bytes += out.nbytes
            if self.limit is not None and self.bytes > self.limit:
                raise _TooBig(self.bytes)
        return out


def model_bytes(build: Callable[[], torch.nn.Module], limit: Optional[int]) -> tuple[int, bool]:
    """Bytes of the parameters and buffers of ``build()``'s model, built on the meta device, and
    whether that is all of them: the build stops as soon as they pass ``limit``. (0, True) when
    it cannot be built there (a model that reads its weights from a file: the real build checks it)."""
    try:
        with torch.random.fork_rng(devices=[]), _OnMeta(limit):
            model = build()
    except _TooBig as exc:
        return exc.args[0], False
    except Exception:  # noqa: BLE001 - not buildable on meta: left to the real build
        return 0, True
    return sum(t.nbytes for t in (*model.parameters(), *model.buffers())), True


class _PeakMemory(TorchDispatchMode):
    """The most bytes held at once by the tensors created under it (a view or an in-place
    result shares its input's storage: not counted again)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """False: torch would wrap ``__torch_dispatch__`` in a Dynamo guard whose first call imports
        ``torch._dynamo`` (seconds); the measured step is never compiled (as in :mod:`kdbench.run.budget`)."""
        return False

    def _free(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {_storage(t) for t in tree_leaves((args, kwargs))}
        for storage in {_storage(t) for t in tree_leaves(out)} - inputs - {None}:
            self.live += storage.nbytes()  # counted until its storage is freed, which autograd may keep alive
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, storage.nbytes())
        return out


def _storage(value) -> Optional[torch.UntypedStorage]:
    """The storage of a dense tensor holding memory, else None (meta, sparse: nothing to count)."""
    if not isinstance(value, torch.Tensor) or value.device.type == "meta" or value.layout != torch.strided:
        return None
    return value.untyped_storage()


def _peak_bytes(phases: list[Phase], model: torch.nn.Module, task: TaskInstance, batch_size: int,
                device: torch.device) -> int:
    """Peak bytes of a step of each distinct phase (loss forward and backward) at ``batch_size``,
    attention on the math backend as when its FLOPs are measured (:mod:`kdbench.run.budget`: the
    runner measures them at the real batch size), which holds every attention matrix."""
    params, peaks = trainable_parameters(model, phases), {}
    batch = probe_batch(task, batch_size, device)
    for phase in phases:
        if phase.cost_key in peaks:
            continue
        with torch.random.fork_rng(devices=[]), training_only(params, phase.params), sdpa_kernel(SDPBackend.MATH), \
                _PeakMemory() as meter:
            loss = phase.loss(batch)
            if loss.requires_grad:
                loss.backward()
        for p in params:
            p.grad = None
        peaks[phase.cost_key] = meter.peak
    return max(peaks.values())


def step_bytes(phases: list[Phase], model: torch.nn.Module, task: TaskInstance, batch_size: int,
               device: torch.device) -> int:
    """Estimated peak bytes of a step at ``batch_size``: measured at batches of 4 and 8 (or at
    ``batch_size`` itself when smaller), growing linearly with the batch."""
    small, large = min(batch_size, 4), min(batch_size, 8)
    low = _peak_bytes(phases, model, task, small, device)
    if large == small:
        return low
    per_example = max(_peak_bytes(phases, model, task, large, device) - low, 0) / (large - small)
    return int(low + per_example * (batch_size - small))


class SizeCheck:
    """The limits of one suite's jobs on one device: each ``check_*`` raises a one-line
    :class:`UserError` naming ``where`` (file and field) when a size cannot run."""

    def __init__(self, device: Optional[torch.device]):
        self.limit = memory_limit(device)
        has = f"the {device.type if device is not None else 'device'} has {size_text(self.limit or 0)}"
        self.has = f"{has} ({LIMIT_VARIABLE})" if os.environ.get(LIMIT_VARIABLE) else has
        self.allowed = f"a model, its training state and a batch under {size_text(self.limit or 0)}"

    def check_model(self, where: str, what: str, build: Callable[[], torch.nn.Module]) -> int:
        """The bytes of ``what`` (the teacher, the student), refused when its training state does not fit."""
        size, whole = model_bytes(build, self.limit and self.limit // STATE_COPIES)
        if self.limit is not None and size * STATE_COPIES > self.limit:
            over = "" if whole else "over "
            raise UserError(f"{where}: {what} alone needs {over}~{size_text(size)} for its weights, {over}"
                            f"~{size_text(size * STATE_COPIES)} to train; {self.has} (allowed: {self.allowed})")
        return size

    def check_step(self, where: str, job: str, model: torch.nn.Module, frozen: int, step: int,
                   batch_size: int) -> None:
        """A step of ``job`` holds ``model``'s training state, ``frozen`` bytes (a teacher) and ``step``
        bytes more at ``batch_size`` (:func:`step_bytes`)."""
        fixed = STATE_COPIES * sum(p.nbytes for p in model.parameters()) + frozen
        if self.limit is None or fixed + step <= self.limit:
            return
        per_example = step / batch_size
        most = int((self.limit - fixed) / per_example) if per_example else 0
        allowed = f"1 to {most}" if most >= 1 else f"none: the models alone need ~{size_text(fixed)}"
        raise UserError(f"{where}: {batch_size} examples a step of {job} need ~{size_text(fixed + step)} "
                        f"(~{size_text(per_example)} an example); {self.has} (allowed: {allowed})")

    @staticmethod
    def check_time(where: str, job: str, steps: int, flops: float) -> None:
        """``steps`` of ``job`` spending ``flops`` in all: refused over :data:`MAX_STEPS` or a year."""
        if steps > MAX_STEPS:
            raise UserError(f"{where}: {steps:.3g} steps of {job}, more than {MAX_STEPS:.0e}: a typo in the "
                            f"exponent? (allowed: 1 to {MAX_STEPS:.0e})")
        if flops / FAST_FLOPS > MAX_SECONDS:
            years = flops / FAST_FLOPS / MAX_SECONDS
            raise UserError(f"{where}: {flops:.3g} FLOPs of {job} take ~{years:.3g} years even at "
                            f"{FAST_FLOPS:.0e} FLOP/s (allowed: under {FAST_FLOPS * MAX_SECONDS:.2g} FLOPs, a year)")

