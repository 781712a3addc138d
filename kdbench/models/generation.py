"""Sampling token sequences from a causal layered model.

:func:`sample` continues prompts by ``new_tokens`` tokens, always exactly that many (a
sequence that has ended keeps going; the task cuts it at its end token), so every call of
a method's loss costs the same FLOPs and the engine's once-measured step price is exact.

Two ways to run, chosen by the model, and the FLOP counter sees whichever runs:

- a model with ``extend(x, past)`` (:class:`kdbench.Encoder` built with ``causal=True``)
  decodes with a key/value cache: the prompt once, then one position per new token;
- any other layered model recomputes the whole prefix for every new token
  (``model(prefix, mask=last position)``): correct for every plugin model, and charged
  the quadratic cost it really has.

Randomness comes only from the generator given (``torch.multinomial``), so a method that
seeds it per step (see :func:`kdbench.streams.seed_for_step`) samples the same sequences
on a resumed run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pick(logits: torch.Tensor, generator: torch.Generator, temperature: float) -> torch.Tensor:
    """The next token of each row ``[batch, 1]``: argmax at temperature 0, else a draw from
    ``softmax(logits / temperature)``."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    probs = F.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def uses_cache(model: nn.Module) -> bool:
    """Whether :func:`sample` decodes ``model`` with a key/value cache."""
    extend = getattr(model, "extend", None)
    return callable(extend) and bool(getattr(model, "config", {}).get("causal", False))


class _Decoder:
    """One model decoding step by step: with its key/value cache where it has one, else by
    recomputing the whole prefix; ``logits`` are the next position's."""

    def __init__(self, model: nn.Module, prompt: torch.Tensor):
        self.model, self.cached, self.x = model, uses_cache(model), prompt
        if self.cached:
            logits, self.past = model.extend(prompt)
            self.logits = logits[:, -1]
        else:
            self.logits = self._last(prompt)

    def _last(self, x: torch.Tensor) -> torch.Tensor:
        last = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
        last[:, -1] = True
        return self.model(x, mask=last)

    def push(self, token: torch.Tensor) -> None:
        """Append ``token`` ``[batch, 1]``; ``self.logits`` become the next position's."""
        if self.cached:
            logits, self.past = self.model.extend(token, self.past)
            self.logits = logits[:, -1]
        else:
            self.x = torch.cat([self.x, token], 1)
            self.logits = self._last(self.x)


@torch.no_grad()
def sample(model: nn.Module, prompt: torch.Tensor, new_tokens: int, generator: torch.Generator,
           temperature: float = 1.0) -> torch.Tensor:
    """``prompt`` ``[batch, P]`` (P >= 1) followed by ``new_tokens`` tokens sampled from ``model``:
    ``[batch, P + new_tokens]``. The model is run as it is (train or eval mode) and without gradient."""
    if new_tokens < 1:
        return prompt
    _check_prompt(prompt, "sample")
    decoder = _Decoder(model, prompt)
    out = [prompt]
    for i in range(new_tokens):
        token = pick(decoder.logits, generator, temperature)
        out.append(token)
        if i < new_tokens - 1:  # the last token is never read: no forward for it
            decoder.push(token)
    return torch.cat(out, 1)


def _check_prompt(prompt: torch.Tensor, who: str) -> None:
    if prompt.shape[1] < 1:
        raise ValueError(f"{who}: the prompt needs at least one token (e.g. a start token)")


@torch.no_grad()
def sample_mixture(model: nn.Module, other: nn.Module, prompt: torch.Tensor, new_tokens: int,
                   generator: torch.Generator, alpha: float) -> torch.Tensor:
    """``prompt`` ``[batch, P]`` followed by ``new_tokens`` tokens, each drawn from the mixture
    ``alpha * p_other + (1 - alpha) * p_model`` of the two models' next-token distributions (at
    temperature 1) given the prefix so far: MiniLLM's teacher-mixed sampling, ``other`` the teacher.
    Both models decode every position (so the cost is fixed, whatever ``alpha``); ``alpha = 0``
    draws from ``model`` alone, with the same random draws :func:`sample` makes at temperature 1."""
    if new_tokens < 1:
        return prompt
    _check_prompt(prompt, "sample_mixture")
    ours, theirs = _Decoder(model, prompt), _Decoder(other, prompt)
    out = [prompt]
    for i in range(new_tokens):
        probs = (1 - alpha) * F.softmax(ours.logits.float(), -1) + alpha * F.softmax(theirs.logits.float(), -1)
        token = torch.multinomial(probs, 1, generator=generator)
        out.append(token)
        if i < new_tokens - 1:
            ours.push(token)
            theirs.push(token)
    return torch.cat(out, 1)
