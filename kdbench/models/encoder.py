"""A small pre-LN transformer encoder with the layered-model interface.

Architecture: token embedding + learned positional embedding, ``layers`` blocks
of ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` (pre-LN: trains stably at the
papers' learning rates without warm-up tricks), a final LayerNorm and a linear
head. The MLP is ``Linear(d, mlp_ratio * d) -> GELU -> Linear(mlp_ratio * d, d)``.
No dropout. Attention is bidirectional, or causal with ``causal=True``.

Layered interface (see :class:`kdbench.api.LayeredModel`):

- layer ``i`` is block ``i``; ``model(x, upto=i)`` runs the embeddings and
  blocks ``1..i`` only and returns the per-token residual stream after block
  ``i``, ``[batch, tokens, width]``. The block output is a sum (no nonlinearity
  follows it), so ``pre_activation`` changes nothing here.
- ``layer_parameters(1)`` includes the token and position embeddings (they run
  as part of block 1); the final LayerNorm and the head belong to no layer.
- ``model(x, mask=m)`` returns logits only at the positions where the boolean
  ``m`` is true, flattened to ``[m.sum(), outputs]`` in row-major order, so the
  vocabulary projection is computed only where there is a label (MLM).
- ``model(x)`` returns ``[batch, outputs]`` logits read at the last position
  with ``readout="last"`` (classification), or ``[batch, tokens, outputs]``
  with ``readout="tokens"``.
- ``model(x, layers=[...], mask=m, with_logits=True)`` runs once and returns
  :class:`kdbench.api.LayerOutputs`: the block outputs asked for and the
  logits (``with_logits=False``: no logits, and no block past the deepest one
  asked for runs).

- ``model(x, layers=[...], internals=("attention", "values", ...))`` also
  returns each requested block's self-attention internals and, with
  ``"embeddings"``, the input of block 1 (:class:`kdbench.InternalOutputs`);
  the same blocks run. Blocks asked for attention or scores compute attention
  with two explicit matmuls, the FLOPs the fused kernel is counted for.

Attention goes through ``F.scaled_dot_product_attention``: the fused kernel
trains fast, and under the math backend (which ``kdbench.run.budget`` selects while
measuring) FlopCounterMode counts its two matmuls, ``2*T*T*d`` each per
sequence and direction. Causal attention is counted (and computed by the math
backend) over the full ``T x T`` score matrix.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.api import INTERNALS, InternalOutputs, LayerInternals, LayerOutputs
from kdbench.models.layered import attention_internals, check_internals, layer_outputs, layers_to_run


class Block(nn.Module):
    """One pre-LN transformer block: multi-head self-attention then a GELU MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, causal: bool):
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be a multiple of heads ({heads})")
        self.heads, self.causal = heads, causal
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, h: torch.Tensor, want: Optional[frozenset[str]] = None
                ) -> torch.Tensor | tuple[torch.Tensor, LayerInternals]:
        """The block's output; with ``want`` (internals' names), also its :class:`LayerInternals`.
        Asked for attention or scores, the block computes attention with two explicit matmuls (the
        same FLOPs as the fused kernel's) instead of ``scaled_dot_product_attention``."""
        b, t, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        inside, a = attention_internals(q, k, v, want, self.causal) if want is not None else (None, None)
        if a is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        h = h + self.proj(a.transpose(1, 2).reshape(b, t, d))
        h = h + self.fc2(F.gelu(self.fc1(self.ln2(h))))
        return h if want is None else (h, inside)

    def extend(self, h: torch.Tensor, past: Optional[tuple[torch.Tensor, torch.Tensor]]
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The causal block's output at new positions ``h`` ``[batch, n, width]`` after the cached
        keys and values ``past`` (None: no earlier positions), and the cache extended by them."""
        b, n, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=past is None and n > 1)
        h = h + self.proj(a.transpose(1, 2).reshape(b, n, d))
        h = h + self.fc2(F.gelu(self.fc1(self.ln2(h))))
        return h, (k, v)


class Encoder(nn.Module):
    """Token transformer: ``vocab_size`` input tokens, ``outputs`` logits per read-out position.

    ``max_len`` bounds the sequence length (learned positions). See the module
    docstring for the layered interface and the read-out rules. ``config`` holds the
    constructor arguments: ``Encoder(**model.config)`` builds the same shape.
    """

    def __init__(self, vocab_size: int, outputs: int, max_len: int, width: int, heads: int, layers: int,
                 mlp_ratio: int = 4, causal: bool = False, readout: Literal["last", "tokens"] = "tokens"):
        """An encoder of these sizes (the model's hyperparameters, hence their number)."""
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.config = {"vocab_size": vocab_size, "outputs": outputs, "max_len": max_len, "width": width,
                       "heads": heads, "layers": layers, "mlp_ratio": mlp_ratio, "causal": causal, "readout": readout}
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(max_len, width)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, causal) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, outputs)
        self.num_layers = layers
        self.width, self.max_len, self.readout = width, max_len, readout
        self.apply(_init)

    #: the internals ``forward(x, layers=[...], internals=(...))`` can return (see :class:`kdbench.LayerInternals`)
    available_internals = INTERNALS

    def hidden_size(self, layer: int) -> int:
        self._check_layer(layer)
        return self.width

    def attention_heads(self, layer: int) -> int:
        """The number of attention heads of layer ``layer`` (every block has ``heads``)."""
        self._check_layer(layer)
        return self.blocks[layer - 1].heads

    def layer_parameters(self, layer: int) -> list[nn.Parameter]:
        self._check_layer(layer)
        params = list(self.blocks[layer - 1].parameters())
        if layer == 1:
            params = [self.tok.weight, self.pos.weight, *params]
        return params

    def _check_layer(self, layer: int) -> None:
        if not 1 <= layer <= self.num_layers:
            raise ValueError(f"layer must be in 1..{self.num_layers}, got {layer}")

    def forward(self, x: torch.Tensor, upto: Optional[int] = None, mask: Optional[torch.Tensor] = None,
                pre_activation: bool = False, layers: Optional[Sequence[int]] = None,
                with_logits: bool = True, internals: Sequence[str] = ()
                ) -> torch.Tensor | LayerOutputs | InternalOutputs:
        depth = layers_to_run(self.num_layers, upto, layers, with_logits)
        want = check_internals(internals, self.available_internals, layers, "Encoder")
        t = x.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len {self.max_len}")
        h = embeddings = self.tok(x) + self.pos.weight[:t]
        states, inside = [], {}
        looked_into = set(layers) if want - {"embeddings"} else set()
        for i, block in enumerate(self.blocks[:depth], start=1):
            if i in looked_into:
                h, inside[i] = block(h, want)
            else:
                h = block(h)
            states.append(h)
        if upto is not None:
            return h
        out = self._logits(h, mask) if with_logits else None
        if layers is None:
            return out
        return layer_outputs(layers, states, out, want, inside, embeddings)

    def extend(self, x: torch.Tensor, past: Optional[list] = None) -> tuple[torch.Tensor, list]:
        """Incremental decoding of a causal encoder: the logits ``[batch, n, outputs]`` of the new
        tokens ``x`` ``[batch, n]`` that follow the positions cached in ``past`` (None: none, then
        ``n`` may be any length; else ``n`` must be 1), and the cache extended by them (per block,
        its keys and values). Equal to the last ``n`` positions of ``model(all tokens)``, at the
        cost of the new positions only (:func:`kdbench.models.generation.sample` uses it)."""
        if not self.blocks[0].causal:
            raise ValueError("extend (incremental decoding) needs a causal encoder (causal=True)")
        start = 0 if past is None else past[0][0].shape[2]
        if past is not None and x.shape[1] != 1:
            raise ValueError(f"extend: after cached positions, one new token at a time (got {x.shape[1]})")
        if start + x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {start + x.shape[1]} exceeds max_len {self.max_len}")
        h = self.tok(x) + self.pos.weight[start:start + x.shape[1]]
        cache = []
        for i, block in enumerate(self.blocks):
            h, kv = block.extend(h, None if past is None else past[i])
            cache.append(kv)
        return self.head(self.norm(h)), cache

    def _logits(self, h: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The head on the last block's output, at the read-out positions."""
        if mask is not None:
            h = h[mask]
        elif self.readout == "last":
            h = h[:, -1]
        return self.head(self.norm(h))


def _init(module: nn.Module) -> None:
    # BERT / GPT-2 initialisation: N(0, 0.02) weights, zero biases
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def encoder_step_flops(batch: int, tokens: int, width: int, layers: int, outputs: int, read: int,
                       mlp_ratio: int = 4, backward: bool = True) -> int:
    """Analytic matmul FLOPs of one encoder forward (and backward) pass.

    Per block and token: QKV ``2*d*3d``, output projection ``2*d*d``, MLP
    ``2*2*d*r*d``; attention ``QK^T`` and ``AV`` ``2*T*d`` each. The head runs
    on ``read`` positions (``batch`` for a last-position read-out, the masked
    count for MLM). Backward doubles every matmul (gradients of both operands:
    the embeddings are trained, so even block 1 needs its input gradient).
    Embedding look-ups, norms, softmax and GELU are not matmuls and not counted.
    The arguments are the shapes the count depends on, hence their number.
    """
    d = width
    per_token = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * mlp_ratio * d + 2 * 2 * tokens * d
    forward = layers * batch * tokens * per_token + 2 * read * d * outputs
    return 3 * forward if backward else forward
