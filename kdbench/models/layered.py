"""What every layered model's forward shares: checking which layers a call asks for.

A layered forward (see :class:`kdbench.api.LayeredModel`) is asked for logits,
for one layer (``upto``), or for several layers in one pass (``layers``, with
or without the logits). :func:`layers_to_run` checks such a request and says
how many layers the pass must run, so that no model runs a layer nobody reads.
A transformer may also be asked for its layers' self-attention internals
(``internals=``): :func:`check_internals` checks that request and
:func:`attention_internals` computes them from a layer's queries, keys and values.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from kdbench.api import InternalOutputs, LayerInternals, LayerOutputs


def layers_to_run(num_layers: int, upto: Optional[int] = None, layers: Optional[Sequence[int]] = None,
                  with_logits: bool = True) -> int:
    """The number of layers (``1..n``) a forward must run for this request.

    ``upto=i``: ``i``. ``layers=[...]`` with ``with_logits=False``: the deepest
    layer asked for. Otherwise (logits wanted): every layer. Raises
    ``ValueError`` for ``upto`` with ``layers``, an empty ``layers``,
    ``with_logits=False`` without ``layers``, and a layer outside
    ``1..num_layers`` (the message names the range).
    """
    if upto is not None and layers is not None:
        raise ValueError("pass upto=i (one layer) or layers=[...] (several), not both")
    if upto is not None:
        check_layer(upto, num_layers, "upto")
        return upto
    if layers is None:
        if not with_logits:
            raise ValueError("with_logits=False needs layers=[...]: without layers the logits are all there is")
        return num_layers
    if len(layers) == 0:
        raise ValueError(f"layers must name at least one layer in 1..{num_layers}")
    for layer in layers:
        check_layer(layer, num_layers, "layers")
    return num_layers if with_logits else max(layers)


def check_layer(layer: int, num_layers: int, name: str = "layer") -> None:
    """Raise ``ValueError`` naming ``name`` and the range unless ``1 <= layer <= num_layers``."""
    if not 1 <= layer <= num_layers:
        raise ValueError(f"{name} must be in 1..{num_layers}, got {layer}")


def check_internals(internals: Sequence[str], available: Sequence[str], layers: Optional[Sequence[int]],
                    model: str) -> frozenset[str]:
    """The internals asked for (see :class:`kdbench.api.LayerInternals`), checked: each must be one
    ``model`` gives (``available``), and they need ``layers=[...]`` (they come with the layers' outputs).
    Raises ``ValueError`` naming what is wrong; an empty request is the empty set."""
    want = frozenset(internals)
    if not want:
        return want
    unknown = sorted(want - set(available))
    if unknown:
        has = ", ".join(available) if available else "none (it has no self-attention)"
        raise ValueError(f"{model}: internals {', '.join(unknown)} are not available; this model gives: {has}")
    if layers is None:
        raise ValueError("internals=(...) needs layers=[...]: they are returned per requested layer")
    return want


def attention_internals(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, want: frozenset[str],
                        causal: bool = False) -> tuple[LayerInternals, Optional[torch.Tensor]]:
    """A layer's :class:`~kdbench.api.LayerInternals` from its per-head ``q, k, v`` (``[batch, heads,
    tokens, head_dim]``), and, when scores had to be computed (attention or scores asked for), the
    attention's output ``softmax(scores) @ v`` so the layer need not compute it again (else None).

    The two matmuls are those the fused attention would run (``2*T*T*d`` FLOPs each), so a layer
    that uses this output instead of ``scaled_dot_product_attention`` costs what it cost before."""
    inside = LayerInternals(queries=q if "queries" in want else None, keys=k if "keys" in want else None,
                            values=v if "values" in want else None)
    if not want & {"attention", "scores"}:
        return inside, None
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if causal:
        t = scores.shape[-1]
        hidden = torch.ones(t, t, dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(hidden, float("-inf"))
    attention = scores.softmax(dim=-1)
    inside.scores = scores if "scores" in want else None
    inside.attention = attention if "attention" in want else None
    return inside, attention @ v


def layer_outputs(layers: Sequence[int], states: list[torch.Tensor], logits: Optional[torch.Tensor],
                  want: frozenset[str], inside: dict[int, LayerInternals], embeddings: Optional[torch.Tensor]
                  ) -> LayerOutputs | InternalOutputs:
    """What ``forward(x, layers=[...])`` returns, from the representation after each block that ran
    (``states[i - 1]`` after block ``i``), the logits (or None), the internals asked for (``want``), those
    gathered per looked-into layer (``inside``) and the input of block 1: :class:`LayerOutputs`, or
    :class:`InternalOutputs` when internals were asked for."""
    hidden = [states[i - 1] for i in layers]
    if not want:
        return LayerOutputs(hidden, logits)
    return InternalOutputs(hidden, logits, [inside.get(i) or LayerInternals() for i in layers],
                           embeddings if "embeddings" in want else None)
