"""What every layered model's forward shares: checking which layers a call asks for.

A layered forward (see :class:`kdbench.api.LayeredModel`) is asked for logits,
for one layer (``upto``), or for several layers in one pass (``layers``, with
or without the logits). :func:`layers_to_run` checks such a request and says
how many layers the pass must run, so that no model runs a layer nobody reads.
"""

from __future__ import annotations

from typing import Optional, Sequence


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
