"""FLOP measurement and the budget ledger.

Per-step FLOPs are *measured*: one real forward and backward of a phase's loss
runs under ``torch.utils.flop_counter.FlopCounterMode``, so every plugin's model
is counted without formulas. Attention runs on the math SDPA backend while
counting because the counter has no formula for the fused CPU kernels. The
probe leaves parameters, gradients and random state as it found them.
"""

from __future__ import annotations

import inspect
import math
from itertools import accumulate
from typing import Iterable, Optional, Sequence

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

try:  # torch's own counting mode, reused below without its first-use cost
    from torch.utils.flop_counter import _FlopCounterMode
except ImportError:  # another torch layout: plain FlopCounterMode (correct, only slower to start)
    _FlopCounterMode = None

from kdbench.api import Batch, Phase, TaskInstance
from kdbench.errors import UserError
from kdbench.run.engine import trainable_parameters, training_only
from kdbench.streams import step_batch, step_generator

if _FlopCounterMode is not None:
    class _CountingMode(_FlopCounterMode):
        """torch's FLOP-counting dispatch mode without the Dynamo guard around ``__torch_dispatch__``.

        torch wraps every dispatch mode's ``__torch_dispatch__`` in ``torch._disable_dynamo``,
        whose first call imports ``torch._dynamo``: 1.3-3 s, more than the whole probe of a
        small model. The probed step is never compiled, so the guard has nothing to do here.
        """

        __torch_dispatch__ = inspect.unwrap(_FlopCounterMode.__torch_dispatch__)

        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            return False

    class StepFlopCounter(FlopCounterMode):
        """``FlopCounterMode`` (same formulas, same totals) that starts in milliseconds."""

        def __enter__(self):
            super().__enter__()
            self.mode.__exit__(None, None, None)
            self.mode = _CountingMode(self)
            self.mode.__enter__()
            return self
else:
    StepFlopCounter = FlopCounterMode


def probe_batch(task: TaskInstance, batch_size: int, device: torch.device) -> Batch:
    """The batch every FLOP probe measures on (teachers, students, co-trained models alike)."""
    return step_batch(task, step_generator(device), 0, 0, batch_size)


def measure_step_flops(phase: Phase, batch: Batch, params: Iterable[torch.nn.Parameter]) -> int:
    """FLOPs of one training step of ``phase`` on ``batch``: loss forward plus backward.

    Optimizer arithmetic is not counted (the usual convention). ``params`` are
    every trainable tensor of the job; as in the engine, only the phase's own
    ``params`` (None: all) require gradients during the step, and every gradient
    is cleared afterwards. A loss that does not depend on any parameter the
    phase trains (computed under ``torch.no_grad()``, or from frozen tensors
    only) would train nothing: that is a plugin error (:class:`UserError`).
    """
    params = list(params)
    trained = params if phase.params is None else list(phase.params)
    devices = [batch.inputs.device] if batch.inputs.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), training_only(params, phase.params):
        with StepFlopCounter(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
            loss = phase.loss(batch)
            if loss.requires_grad:
                loss.backward()
    learns = loss.requires_grad and any(p.grad is not None for p in trained)
    for p in params:
        p.grad = None
    if not learns:
        raise UserError(f"phase {phase.name!r}: its loss does not depend on any parameter the phase trains "
                        "(computed under torch.no_grad(), or from frozen tensors only), so it would train nothing")
    return int(counter.get_total_flops())


def measure_phases(phases: list[Phase], model: torch.nn.Module, task: TaskInstance, batch_size: int,
                   device: torch.device) -> list[int]:
    """Per-step FLOPs of every phase training ``model``, measured once per distinct ``cost_key``
    on the probe batch."""
    probe = probe_batch(task, batch_size, device)
    params = trainable_parameters(model, phases)
    cache: dict[str, int] = {}
    for ph in phases:
        if ph.cost_key not in cache:
            cache[ph.cost_key] = measure_step_flops(ph, probe, params)
    return [cache[ph.cost_key] for ph in phases]


def allot_steps(phases: Sequence[Phase], step_flops: Sequence[int], budget: Optional[float]) -> list[int]:
    """Steps per phase so that the run spends at most ``budget`` FLOPs.

    A phase with ``steps`` takes that many (fewer if the budget runs out); one
    with ``share`` takes ``floor(share * budget / step_flops)``; the last phase,
    unless it sets ``steps``, takes all that is left, so the run stops at the last
    step that fits in the budget. ``budget=None`` (teacher training) needs every
    phase to set ``steps``.
    """
    remaining = math.inf if budget is None else float(budget)
    allotted = []
    for i, (phase, cost) in enumerate(zip(phases, step_flops)):
        cost = max(int(cost), 1)
        fits = remaining // cost if math.isfinite(remaining) else math.inf
        if phase.steps is not None:
            n = min(phase.steps, fits)
        elif budget is None:
            raise ValueError(f"phase {phase.name!r} needs steps when there is no FLOP budget")
        elif i == len(phases) - 1:
            n = fits
        elif phase.share is not None:
            n = min(math.floor(phase.share * budget / cost), fits)
        else:
            raise ValueError(f"phase {phase.name!r}: only the last phase may omit share and steps")
        n = int(n)
        allotted.append(n)
        remaining -= n * cost
    return allotted


def eval_steps(step_flops: Sequence[int], steps: Sequence[int], points: int) -> list[int]:
    """Step counts after which to evaluate: 0 (before training), every phase boundary,
    and the first step reaching each of ``points`` evenly spaced FLOP marks."""
    marks = {0, *accumulate(steps)}
    total = sum(c * n for c, n in zip(step_flops, steps))
    if points > 0 and total > 0:
        start_step, start_flops, j = 0, 0, 1
        for cost, n in zip(step_flops, steps):
            end_flops = start_flops + cost * n
            # integer arithmetic: mark j sits at total * j / points FLOPs
            while j <= points and total * j <= end_flops * points:
                into_phase = -(-(total * j - start_flops * points) // (cost * points))
                marks.add(start_step + min(max(into_phase, 1), n))
                j += 1
            start_step, start_flops = start_step + n, end_flops
    return sorted(marks)
