"""Hugging Face GPT-2-style causal LMs with the layered-model interface.

:class:`HFDecoder` wraps a ``GPT2LMHeadModel`` (``model_type: gpt2``, from
``transformers``, the optional extra ``pip install "kdbench[hf]"``) so that it can be a
kdbench teacher or student in the causal LM tasks (``pcfg-lm``, ``lm``):

- layer ``i`` is transformer block ``i`` (``transformer.h[i - 1]``); ``model(x, upto=i)``
  runs the embeddings and blocks ``1..i`` only and returns the hidden states after block
  ``i``, ``[batch, tokens, hidden]``: the model's own ``output_hidden_states[i]`` for
  ``i`` below the last block. (GPT-2's ``hidden_states`` applies the final LayerNorm
  ``ln_f`` to the last entry; here every layer's output is the block's own, before
  ``ln_f``, which belongs to the head.) A block ends in a residual sum, so
  ``pre_activation`` changes nothing.
- ``model(x, mask=m)`` runs the head (``ln_f``, then ``lm_head``) only where the boolean
  ``m`` is true and returns ``[m.sum(), vocab]`` in row-major order; ``model(x)``
  returns ``[batch, tokens, vocab]``. Position ``t``'s logits predict token ``t + 1``
  and depend on tokens ``<= t`` only.
- ``model(x, layers=[...], mask=m, with_logits=True)`` runs once and returns
  :class:`kdbench.api.LayerOutputs`; ``internals=(...)`` adds each requested block's
  causal self-attention internals (queries, keys, values split from GPT-2's fused
  ``c_attn``; attention and scores ``-inf`` above the diagonal), and with
  ``"embeddings"`` the embedding output that enters block 1 (as
  :class:`kdbench.models.HFEncoder` does).
- ``layer_parameters(1)`` includes the embeddings (``wte``, ``wpe``); ``ln_f`` and the
  ``lm_head`` belong to no layer (GPT-2 ties ``lm_head`` to ``wte``, so the tied
  matrix is layer 1's).
- ``extend(x, past)``: incremental decoding with a key/value cache (the contract of
  :meth:`kdbench.Encoder.extend`); ``config`` holds ``causal: True``, so
  :func:`kdbench.models.generation.sample` decodes with it.

Each block is computed here from the block's own modules (``ln_1``, ``attn.c_attn``,
``attn.c_proj``, ``ln_2``, ``mlp``, their dropouts, ``attn.scaling``) with PyTorch's
``scaled_dot_product_attention(is_causal=True)``: no attention mask is passed anywhere
(the causal LM tasks mask padding out of the loss instead), and the result equals
``GPT2LMHeadModel``'s own forward (the tests check it). FlopCounterMode counts that
attention (kdbench measures steps with the math backend). Cross-attention
(``add_cross_attention``) is refused. Importing this module does not import
transformers; building an :class:`HFDecoder` does.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.api import INTERNALS, InternalOutputs, LayerInternals, LayerOutputs
from kdbench.errors import UserError
from kdbench.models.hf import COUNTED_ATTENTION, import_transformers, load_local_pretrained, quiet_progress
from kdbench.models.layered import (attention_internals, check_internals, check_layer, layer_outputs,
                                    layers_to_run)

#: the model types HFDecoder wraps
DECODER_TYPES = ("gpt2",)


class HFDecoder(nn.Module):
    """A Hugging Face GPT-2 causal LM (``GPT2LMHeadModel``) as a kdbench layered model.

    Build one with :meth:`from_config` (random initialisation) or :meth:`from_pretrained`
    (a local ``save_pretrained`` folder), or wrap a model you built with
    ``HFDecoder(model)``. The wrapped model is ``self.model``. See the module docstring.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        import_transformers()
        config = model.config
        if config.model_type not in DECODER_TYPES:
            raise UserError(f"HFDecoder: model_type {config.model_type!r} is not supported; "
                            f"allowed: {', '.join(DECODER_TYPES)}")
        if type(model).__name__ != "GPT2LMHeadModel":
            raise UserError(f"HFDecoder wraps a causal LM (GPT2LMHeadModel), got {type(model).__name__}")
        if getattr(config, "add_cross_attention", False):
            raise UserError("HFDecoder: add_cross_attention is not supported (a decoder-only model, no encoder)")
        attention = getattr(config, "_attn_implementation", None)
        if attention not in COUNTED_ATTENTION:
            raise UserError(f"HFDecoder: attention implementation {attention!r} is not counted by kdbench's FLOP "
                            f"counter; build the model with attn_implementation in {', '.join(COUNTED_ATTENTION)}")
        self.model = model
        self.model_type = config.model_type
        self.num_layers = config.n_layer
        self.width = config.n_embd
        self.vocab_size = config.vocab_size
        self.max_len = config.n_positions
        #: read by kdbench.models.generation: decode with :meth:`extend` (a key/value cache)
        self.config = {"causal": True}
        self.train(model.training)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "HFDecoder":
        """A randomly initialised GPT-2 from ``GPT2Config`` fields (``n_layer``, ``n_embd``,
        ``n_head``, ``n_positions``, ``vocab_size``, ...; an unknown field is a
        :class:`~kdbench.UserError` listing the allowed ones). Initialisation draws from
        torch's global generator, as every kdbench model does."""
        transformers = import_transformers()
        config_class = transformers.GPT2Config
        known = set(config_class().to_dict()) | set(config_class.attribute_map)
        for key in config:
            if key not in known:
                raise UserError(f"HFDecoder.from_config: config.{key} is not a {config_class.__name__} field; "
                                f"allowed: {', '.join(sorted(k for k in known if not k.startswith('_')))}")
        vocab = config.get("vocab_size", config_class().vocab_size)
        # GPT-2's default start/end ids (50256) lie outside a smaller vocabulary: leave them unset there
        defaults = {k: None for k in ("bos_token_id", "eos_token_id") if config_class().to_dict()[k] >= vocab}
        hf_config = config_class(**{**defaults, **config})
        return cls(transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa"))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "HFDecoder":
        """The GPT-2 saved with ``save_pretrained`` in the local folder ``path`` (local files only:
        never a download). The model comes back in eval mode, as ``transformers`` loads it."""
        model = load_local_pretrained(path, "HFDecoder", DECODER_TYPES, "GPT2LMHeadModel", "a GPT-2 causal LM")
        return cls(model)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write the wrapped model to ``path`` (``from_pretrained`` here or in transformers reads it back)."""
        with quiet_progress():
            self.model.save_pretrained(path)

    @property
    def _blocks(self) -> nn.ModuleList:
        return self.model.transformer.h

    #: the internals ``forward(x, layers=[...], internals=(...))`` can return (see :class:`kdbench.LayerInternals`)
    available_internals = INTERNALS

    def hidden_size(self, layer: int) -> int:
        """The width of block ``layer``'s output (every block has the model's ``n_embd``)."""
        check_layer(layer, self.num_layers)
        return self.width

    def layer_parameters(self, layer: int) -> list[nn.Parameter]:
        """Block ``layer``'s parameters; layer 1 also owns the embeddings (``wte``, ``wpe``)."""
        check_layer(layer, self.num_layers)
        params = list(self._blocks[layer - 1].parameters())
        if layer == 1:
            t = self.model.transformer
            params = [*t.wte.parameters(), *t.wpe.parameters(), *params]
        return params

    def attention_heads(self, layer: int) -> int:
        """The number of attention heads of block ``layer`` (the config's ``n_head``)."""
        check_layer(layer, self.num_layers)
        return self.model.config.n_head

    def forward(self, x: torch.Tensor, upto: Optional[int] = None, mask: Optional[torch.Tensor] = None,
                pre_activation: bool = False, layers: Optional[Sequence[int]] = None,
                with_logits: bool = True, internals: Sequence[str] = ()
                ) -> torch.Tensor | LayerOutputs | InternalOutputs:
        depth = layers_to_run(self.num_layers, upto, layers, with_logits)
        want = check_internals(internals, self.available_internals, layers, "HFDecoder")
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds the model's {self.max_len} positions")
        h = embeddings = self._embed(x, 0)
        states, inside = [], {}
        looked_into = set(layers) if want - {"embeddings"} else set()
        for i, block in enumerate(self._blocks[:depth], start=1):
            h, _, inside[i] = self._block(block, h, None, want if i in looked_into else None)
            states.append(h)
        if upto is not None:
            return h
        logits = self._head(h[mask] if mask is not None else h) if with_logits else None
        if layers is None:
            return logits
        return layer_outputs(layers, states, logits, want, inside, embeddings)

    def extend(self, x: torch.Tensor, past: Optional[list] = None) -> tuple[torch.Tensor, list]:
        """Incremental decoding: the logits ``[batch, n, vocab]`` of the new tokens ``x`` ``[batch, n]``
        that follow the positions cached in ``past`` (None: none, then ``n`` may be any length; else
        ``n`` must be 1), and the cache extended by them (per block, its keys and values). Equal to
        the last ``n`` positions of ``model(all tokens)``, at the cost of the new positions only."""
        start = 0 if past is None else past[0][0].shape[2]
        if past is not None and x.shape[1] != 1:
            raise ValueError(f"extend: after cached positions, one new token at a time (got {x.shape[1]})")
        if start + x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {start + x.shape[1]} exceeds the model's {self.max_len} positions")
        h = self._embed(x, start)
        cache = []
        for i, block in enumerate(self._blocks):
            h, kv, _ = self._block(block, h, None if past is None else past[i], None)
            cache.append(kv)
        return self._head(h), cache

    def _embed(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Token plus position embeddings of ``x`` at positions ``start, start + 1, ...``, then dropout."""
        t = self.model.transformer
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        return t.drop(t.wte(x) + t.wpe(positions))

    def _block(self, block: nn.Module, h: torch.Tensor, past: Optional[tuple[torch.Tensor, torch.Tensor]],
               want: Optional[frozenset[str]]) -> tuple[torch.Tensor, tuple, Optional[LayerInternals]]:
        """GPT-2 block ``block`` on ``h`` (after the cached keys and values ``past``, if any): its output,
        its keys and values (the cache), and with ``want`` its internals."""
        attn = block.attn
        heads = self.model.config.n_head
        q, k, v = (t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
                   for t in attn.c_attn(block.ln_1(h)).split(self.width, dim=2))
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        dropout = attn.attn_dropout.p if self.training else 0.0
        inside, a = None, None
        if want is not None:
            # attention_internals scales by head_dim ** -0.5; GPT-2's own scaling may differ by config
            rescaled = q if attn.scaling == q.shape[-1] ** -0.5 else q * (attn.scaling * q.shape[-1] ** 0.5)
            inside, a = attention_internals(rescaled, k, v, want, causal=True)
            inside.queries = q if "queries" in want else None
        if a is None or dropout > 0:
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=attn.scaling,
                                               is_causal=past is None and q.shape[2] > 1)
        a = a.transpose(1, 2).reshape(h.shape)
        h = h + attn.resid_dropout(attn.c_proj(a))
        h = h + block.mlp(block.ln_2(h))
        return h, (k, v), inside

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """The LM head: the final LayerNorm, then the vocabulary projection."""
        return self.model.lm_head(self.model.transformer.ln_f(h))
