"""What the causal-LM methods (seq-kd, gkd, minillm) share: the refusal of other tasks, the per-step
sampling generator, and rows scored at a fixed set of positions.

A method that generates trains on rows whose learned positions (up to each row's end token) differ
from step to step; the engine measures a loss's FLOPs once, on a probe batch, and charges that on
every step. So the models here always score the same positions: every position after the prompt
(``[batch, seq_len - prompt_len + 1]``), and the loss weighs them by whether the row learns them.
A step then costs the same whatever the samples; positions past a row's end cost FLOPs but teach
nothing. (One-shot scores only the learned positions of its data rows, so its step costs less.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kdbench.api import CausalLMInstance, MethodContext
from kdbench.errors import UserError
from kdbench.streams import derive_seed, seed_for_step


def require_causal_lm(ctx: MethodContext, method: str) -> CausalLMInstance:
    """``ctx.task`` if it is a causal language-model task, else a :class:`kdbench.UserError` naming ``method``."""
    if not isinstance(ctx.task, CausalLMInstance):
        raise UserError(f"{method}: needs a causal language-model task (lm, pcfg-lm); this task "
                        f"({type(ctx.task).__name__}) is not one: {method} generates token sequences")
    return ctx.task


def step_sampler(ctx: MethodContext) -> torch.Generator:
    """The generator of this step's samples: the ``sampling`` stream of the run's seed at ``ctx.clock.step``,
    so a resumed run draws the same sequences (never torch's global generator)."""
    seed = seed_for_step(derive_seed("sampling", ctx.seed), ctx.clock.step)
    return torch.Generator(device=ctx.device).manual_seed(seed)


def new_tokens(task: CausalLMInstance) -> int:
    """How many tokens continue a prompt to a full row (``seq_len + 1`` tokens)."""
    return task.seq_len + 1 - task.prompt_len


@dataclass
class ScoredRows:
    """Rows as a method scores them: ``inputs`` ``[batch, seq_len]``; ``positions`` (bool, same shape)
    the fixed positions the models score (every input position from ``prompt_len - 1`` on);
    ``learned`` (float, one per scored position, flattened as ``model(inputs, mask=positions)``
    returns logits) 1 where the row learns the next token, else 0; ``targets`` the next tokens
    there (padding where not learned); ``count`` the learned positions (at least 1)."""

    inputs: torch.Tensor
    positions: torch.Tensor
    learned: torch.Tensor
    targets: torch.Tensor
    count: torch.Tensor

    def logits(self, model: nn.Module) -> torch.Tensor:
        """``model``'s next-token logits at the scored positions, float32: ``[positions, vocab]``."""
        return model(self.inputs, mask=self.positions).float()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of per-position ``values`` over the learned positions."""
        return (values * self.learned).sum() / self.count


def scored_rows(task: CausalLMInstance, rows: torch.Tensor) -> ScoredRows:
    """Full rows ``[batch, seq_len + 1]`` as :class:`ScoredRows`: the task's :meth:`batch_from_tokens`
    decides what is learned (after the prompt, up to each row's end token)."""
    batch = task.batch_from_tokens(rows)
    positions = torch.zeros_like(batch.mask)
    positions[:, task.prompt_len - 1:] = True
    learned = batch.mask[positions]
    targets = batch.tokens[:, 1:][positions]
    return ScoredRows(batch.inputs, positions, learned.float(), targets,
                      learned.sum().clamp(min=1).float())
