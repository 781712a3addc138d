"""A one-hidden-layer (or deeper) MLP with the layered-model interface."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from kdbench.api import LayerOutputs
from kdbench.models.layered import check_internals, layers_to_run


class MLP(nn.Module):
    """``Linear(n_in, h) -> ReLU -> ... -> Linear(h, n_out)``.

    Layer ``i`` (1-based) is the i-th hidden layer: ``Linear`` then ``ReLU``.
    ``forward(x, upto=i)`` returns that layer's post-activation output, or its
    pre-activation output with ``pre_activation=True``; ``forward(x,
    layers=[...])`` returns several layers' outputs (and the logits) from one
    pass as :class:`kdbench.api.LayerOutputs`. It has no attention: ``available_internals`` is empty
    and ``forward(..., internals=...)`` raises ``ValueError``.

    ``config`` holds the constructor arguments: ``MLP(**model.config)`` builds the same shape.
    """

    def __init__(self, n_in: int, hidden: int | list[int], n_out: int):
        super().__init__()
        self.config = {"n_in": n_in, "hidden": hidden if isinstance(hidden, int) else list(hidden), "n_out": n_out}
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        sizes = [n_in, *widths]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], n_out)
        self.num_layers = len(widths)
        self._widths = widths

    #: no self-attention, no embeddings: asking ``forward`` for internals raises ``ValueError``
    available_internals: tuple[str, ...] = ()

    def hidden_size(self, layer: int) -> int:
        return self._widths[layer - 1]

    def layer_parameters(self, layer: int) -> list[nn.Parameter]:
        return list(self.hidden[layer - 1].parameters())

    def forward(self, x: torch.Tensor, upto: Optional[int] = None, mask: Optional[torch.Tensor] = None,
                pre_activation: bool = False, layers: Optional[Sequence[int]] = None,
                with_logits: bool = True, internals: Sequence[str] = ()) -> torch.Tensor | LayerOutputs:
        check_internals(internals, self.available_internals, layers, "MLP")  # none: any request is a ValueError
        if mask is not None:
            raise ValueError("MLP outputs one prediction per example: mask must be None")
        depth = layers_to_run(self.num_layers, upto, layers, with_logits)
        states = []
        for layer in self.hidden[:depth]:
            pre = layer(x)
            x = torch.relu(pre)
            states.append(pre if pre_activation else x)
        if upto is not None:
            return states[-1]
        out = self.head(x) if with_logits else None
        if layers is None:
            return out
        return LayerOutputs([states[i - 1] for i in layers], out)
