"""A one-hidden-layer (or deeper) MLP with the layered-model interface."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class MLP(nn.Module):
    """``Linear(n_in, h) -> ReLU -> ... -> Linear(h, n_out)``.

    Layer ``i`` (1-based) is the i-th hidden layer: ``Linear`` then ``ReLU``.
    ``forward(x, upto=i)`` returns that layer's post-activation output, or its
    pre-activation output with ``pre_activation=True``.
    """

    def __init__(self, n_in: int, hidden: int | list[int], n_out: int):
        super().__init__()
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        sizes = [n_in, *widths]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], n_out)
        self.num_layers = len(widths)
        self._widths = widths

    def hidden_size(self, layer: int) -> int:
        return self._widths[layer - 1]

    def layer_parameters(self, layer: int) -> list[nn.Parameter]:
        return list(self.hidden[layer - 1].parameters())

    def forward(self, x: torch.Tensor, upto: Optional[int] = None, mask: Optional[torch.Tensor] = None,
                pre_activation: bool = False) -> torch.Tensor:
        if mask is not None:
            raise ValueError("MLP outputs one prediction per example: mask must be None")
        if upto is not None and not 1 <= upto <= self.num_layers:
            raise ValueError(f"upto must be in 1..{self.num_layers}, got {upto}")
        for i, layer in enumerate(self.hidden, start=1):
            x = layer(x)
            if upto == i and pre_activation:
                return x
            x = torch.relu(x)
            if upto == i:
                return x
        return self.head(x)
