"""Seeds as one model: the runs of a group that differ only in their student seed, trained together.

The students' parameters are stacked along a new leading dimension (one tensor per
parameter name, ``[seeds, ...]``), each seed draws its own batch from its own stream,
and the loss of every seed is computed at once by ``torch.func.vmap`` over
``functional_call``: the first seed's phase loss runs with each seed's slice of the
parameters in place of its student's. A shared teacher sees the seeds' batches stacked,
so its forward is one batched pass. Elementwise optimizers (SGD, Adam, AdamW) update
the stacked tensors exactly as they would update each seed's own, so a seed's curve is
its separate run's up to the order of fp32 reductions inside batched kernels.

This holds only when a phase's loss depends on the seed through the student's
parameters and the batch alone. :func:`why_not_stackable` checks it before anything
trains (every phase's stacked loss against each seed's own, on a batch of each seed),
and names what stands in the way: a phase that ends early, keeps state, co-trains a
model or trains parameters outside the student; per-seed buffers; a loss that draws
random numbers that reach it, has data-dependent shapes (masked tokens) or reads per-seed tensors of
its own (curriculum extraction's random projections). Such groups run seed by seed.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import nn
from torch.func import functional_call, vmap

from kdbench.api import Batch, Phase
from kdbench.streams import step_batch, step_generator

#: stacked losses must match each seed's own this closely (fp32 reductions in another order)
LOSS_RTOL, LOSS_ATOL = 1e-4, 1e-6


class _PhaseLoss(nn.Module):
    """The first seed's student as a submodule and one phase's loss as ``forward``, so that
    ``functional_call`` can swap the student's parameters for a seed's slice."""

    def __init__(self, student: nn.Module, phase: Phase):
        super().__init__()
        self.student = student
        self._loss = phase.loss

    def forward(self, batch: Batch) -> torch.Tensor:
        return self._loss(batch)


def stack_batches(batches: list[Batch]) -> Batch:
    """One batch whose every tensor field has a leading seed dimension (None fields stay None)."""
    first = batches[0]
    values = {}
    for f in dataclasses.fields(first):
        items = [getattr(b, f.name) for b in batches]
        if isinstance(items[0], torch.Tensor) and len({tuple(t.shape) for t in items}) > 1:
            raise ValueError(f"the seeds' batches differ in shape ({f.name}: "
                             f"{sorted({tuple(t.shape) for t in items})[:2]}, e.g. another number of masked tokens)")
        values[f.name] = torch.stack(items) if isinstance(items[0], torch.Tensor) else items[0]
    return dataclasses.replace(first, **values)


def batch_slice(batch: Batch, s: int) -> Batch:
    """Seed ``s``'s batch out of a stacked one."""
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[s] for f in dataclasses.fields(batch)
                                         if isinstance(getattr(batch, f.name), torch.Tensor)})


class SeedStack:
    """The students of ``models`` (same architecture, one per seed) as stacked parameters.

    ``params`` (name -> ``[seeds, ...]`` leaf tensor) is what the optimizer trains;
    :meth:`losses` gives every seed's loss of a phase as a ``[seeds]`` tensor; :meth:`unstack`
    copies a seed's slice back into its own model (to evaluate or save it).
    """

    def __init__(self, models: list[nn.Module], phases: list[Phase]):
        self.models, self.phases = models, phases
        names = [name for name, _ in models[0].named_parameters()]
        per_model = [dict(m.named_parameters()) for m in models]
        self.params = {name: torch.stack([p[name].detach() for p in per_model]).requires_grad_(True)
                       for name in names}
        self._by_id = {id(p): name for name, p in per_model[0].items()}
        self._calls = [self._vmapped(_PhaseLoss(models[0], ph)) for ph in phases]
        self._entered: set[int] = set()

    def trained(self, phase: Phase) -> Optional[list[torch.Tensor]]:
        """The stacked tensors a phase trains (its ``params``, the first seed's, by name); None: all."""
        if phase.params is None:
            return None
        return [self.params[self._by_id[id(p)]] for p in phase.params]

    @staticmethod
    def _vmapped(module: _PhaseLoss):
        def one_seed(params: dict, tensors: dict, batch: Batch) -> torch.Tensor:
            return functional_call(module, {f"student.{k}": v for k, v in params.items()},
                                   (dataclasses.replace(batch, **tensors),))

        # "same": random numbers drawn inside a loss are one draw for every seed. A loss whose
        # value depends on them differs from the seeds' own losses and is refused by
        # why_not_stackable; draws that do not reach the loss (a teacher checkpoint's model
        # initialised before its weights are loaded) are harmless.
        mapped = vmap(one_seed, in_dims=(0, 0, None), randomness="same")

        def call(params: dict, batch: Batch) -> torch.Tensor:
            tensors = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)
                       if isinstance(getattr(batch, f.name), torch.Tensor)}
            return mapped(params, tensors, dataclasses.replace(batch, **{k: None for k in tensors}))

        return call

    def draw(self, task, generator: torch.Generator, stream_seeds: list[int], step: int, batch_size: int) -> Batch:
        """Every seed's batch of ``step`` from its own stream, stacked."""
        return stack_batches([step_batch(task, generator, seed, step, batch_size) for seed in stream_seeds])

    def losses(self, i: int, batch: Batch) -> torch.Tensor:
        """Phase ``i``'s loss for every seed, ``[seeds]``. On a phase's first step its loss runs once
        outside vmap, without gradients, so that whatever it loads lazily (a teacher checkpoint,
        built with random initial weights) is loaded outside the transform."""
        if i not in self._entered:
            with torch.no_grad():
                self.phases[i].loss(batch_slice(batch, 0))
            self._entered.add(i)
        return self._calls[i](self.params, batch)

    def clip(self, max_norm: float) -> None:
        """Clip each seed's gradient to a total norm of ``max_norm`` (as its own run would)."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if not grads:
            return
        norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # [seeds]
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))

    def freeze(self, s: int) -> None:
        """Zero seed ``s``'s gradients (a diverged seed: its slice no longer matters, NaN or not)."""
        for p in self.params.values():
            if p.grad is not None:
                p.grad[s] = 0

    def unstack(self, s: int) -> nn.Module:
        """Seed ``s``'s model holding its slice of the stacked parameters."""
        with torch.no_grad():
            for name, p in self.models[s].named_parameters():
                p.copy_(self.params[name][s])
        return self.models[s]

    def state_dict(self) -> dict:
        return {name: p.detach().clone() for name, p in self.params.items()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(state[name])


def why_not_stackable(models: list[nn.Module], phases: list[list[Phase]], task, stream_seeds: list[int],
                      batch_size: int) -> Optional[str]:
    """None if the seeds can train as one :class:`SeedStack`, else why not (one line).

    ``phases[s]`` are seed ``s``'s phases. Besides what the phases declare, it checks the
    stacked loss of every phase against each seed's own loss on that seed's first batch."""
    if len(models) < 2:
        return "a single seed"
    if len({type(m) for m in models}) > 1:
        return "the seeds' students differ in type"
    first = phases[0]
    if any(len(p) != len(first) for p in phases):
        return "the seeds' methods give different numbers of phases"
    for ph in first:
        for attribute, what in (("until", "may end early"), ("state", "keeps state between steps"),
                                ("cotrain", "co-trains a model")):
            if getattr(ph, attribute) is not None:
                return f"phase {ph.name!r} {what}"
    own = {id(p) for p in models[0].parameters()}
    for ph in first:
        if ph.params is not None and not all(id(p) in own for p in ph.params):
            return f"phase {ph.name!r} trains parameters outside the student"
    shapes = [[(n, p.shape) for n, p in m.named_parameters()] for m in models]
    if any(s != shapes[0] for s in shapes):
        return "the seeds' students differ in shape"
    buffers = [dict(m.named_buffers()) for m in models]
    for name, value in buffers[0].items():
        if any(not torch.equal(b[name], value) for b in buffers[1:]):
            return f"the students' buffer {name!r} differs by seed"
    stack = SeedStack(models, first)
    generator = step_generator(next(models[0].parameters()).device)
    try:
        batch = stack.draw(task, generator, stream_seeds, 0, batch_size)
    except ValueError as exc:
        return str(exc)
    for i, ph in enumerate(first):
        with torch.no_grad():  # each seed's own loss first: whatever a loss loads lazily is loaded outside vmap
            own_losses = torch.stack([phases[s][i].loss(batch_slice(batch, s)).detach() for s in range(len(models))])
        try:
            with torch.no_grad():
                stacked = stack.losses(i, batch)
        except Exception as exc:  # vmap refuses: data-dependent shapes, .item() ...
            return f"phase {ph.name!r} cannot be batched over seeds ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        if stacked.shape != own_losses.shape or not torch.allclose(stacked, own_losses, rtol=LOSS_RTOL,
                                                                   atol=LOSS_ATOL):
            return f"phase {ph.name!r}'s loss depends on the seed beyond the student's parameters"
    return None
