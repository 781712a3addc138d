"""Hugging Face masked-LM encoders with the layered-model interface.

:class:`HFEncoder` wraps a ``BertForMaskedLM``, ``RobertaForMaskedLM`` or
``DistilBertForMaskedLM`` (from ``transformers`` >= 4.46, the optional extra
``pip install "kdbench[hf]"``) so that it can be a kdbench teacher or student:

- layer ``i`` is transformer layer ``i``; ``model(x, upto=i)`` runs the
  embeddings and layers ``1..i`` only (their FLOPs are all that is charged) and
  returns the per-token hidden states after layer ``i``, ``[batch, tokens,
  hidden]``: the model's own ``output_hidden_states[i]``. A layer ends in a
  LayerNorm, not a nonlinearity, so ``pre_activation`` changes nothing.
- ``model(x, mask=m)`` runs the MLM head (transform, then the decoder over the
  vocabulary) only where the boolean ``m`` is true and returns ``[m.sum(),
  vocab]`` in row-major order; ``model(x)`` returns ``[batch, tokens, vocab]``.
- ``model(x, layers=[...], mask=m, with_logits=True)`` runs once and returns
  :class:`kdbench.api.LayerOutputs` (see :class:`kdbench.api.LayeredModel`).
- ``layer_parameters(1)`` includes the embeddings (word, position, token type,
  their LayerNorm); the MLM head belongs to no layer.
- ``model(x, layers=[...], internals=("attention", "values", ...))`` also returns
  each requested layer's self-attention internals (:class:`kdbench.InternalOutputs`)
  and, with ``"embeddings"``, the embedding output that enters layer 1. Queries,
  keys and values are the outputs of the layer's own projections, caught by forward
  hooks while it runs (no extra cost); attention probabilities and scores are
  recomputed from them, ``softmax(q k^T / sqrt(head_dim))``, beside the layer's fused
  attention: one extra ``2*T*T*width`` matmul per layer (forward; measured and
  charged like any other). The same layers run as without ``internals``.

Inputs are token ids ``[batch, tokens]`` with no attention mask: kdbench's MLM
tasks pad with an ordinary token, so every position attends to every other.
(RoBERTa still gives its padding token id the padding position, as it always does.)

Attention runs through PyTorch's ``scaled_dot_product_attention`` (transformers'
``"sdpa"`` implementation, set when a model is built): fused kernels in
training, and the math backend, whose matmuls ``FlopCounterMode`` counts, while
kdbench measures a step. Importing this module does not import transformers;
building an :class:`HFEncoder` does.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from kdbench.api import INTERNALS, InternalOutputs, LayerOutputs
from kdbench.errors import UserError
from kdbench.models.layered import (attention_internals, check_internals, check_layer, layer_outputs,
                                    layers_to_run)

#: model_type -> (attribute of the MLM model holding the base model, attribute of the base holding ``.layer``)
ARCHITECTURES = {"bert": ("bert", "encoder"), "roberta": ("roberta", "encoder"),
                 "distilbert": ("distilbert", "transformer")}
#: attention implementations whose arithmetic FlopCounterMode sees
COUNTED_ATTENTION = ("sdpa", "eager")


def import_transformers() -> Any:
    """The ``transformers`` module, or a :class:`~kdbench.UserError` saying how to install it."""
    try:
        # optional dependency: transformers (extra `hf`)
        import transformers
    except ImportError as e:
        raise UserError('Hugging Face models need the transformers package: pip install "kdbench[hf]"') from e
    return transformers


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No ``transformers`` progress bars (loading and writing weights) inside, as they were after."""
    logging = import_transformers().utils.logging
    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def load_local_pretrained(path: str | os.PathLike, who: str, allowed: Sequence[str], auto_class: str,
                          kind: str) -> nn.Module:
    """The Hugging Face model saved with ``save_pretrained`` in the local folder ``path``, loaded with
    ``transformers.<auto_class>`` (local files only: never a download; sdpa attention, counted by kdbench);
    a :class:`~kdbench.UserError` naming ``who`` when the folder is missing, holds no config, a
    ``model_type`` outside ``allowed`` or no loadable ``kind``."""
    transformers = import_transformers()
    if not os.path.isdir(path):
        raise UserError(f"{path}: not a folder; {who}.from_pretrained reads a local folder written by "
                        "save_pretrained (models are never downloaded)")
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: no Hugging Face config in this folder: {e}") from e
    if config.model_type not in allowed:
        raise UserError(f"{path}: model_type {config.model_type!r} is not supported by {who}; "
                        f"allowed: {', '.join(allowed)}")
    try:
        with quiet_progress():
            return getattr(transformers, auto_class).from_pretrained(path, local_files_only=True,
                                                                     attn_implementation="sdpa")
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load {kind} from this folder: {e}") from e


class HFEncoder(nn.Module):
    """A Hugging Face masked-LM model (bert, roberta, distilbert) as a kdbench layered model.

    Build one with :meth:`from_config` (random initialisation) or
    :meth:`from_pretrained` (a local ``save_pretrained`` folder), or wrap a model
    you built with ``HFEncoder(model)``. The wrapped model is ``self.model``.
    See the module docstring for the layered interface.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        import_transformers()
        config = model.config
        if config.model_type not in ARCHITECTURES:
            raise UserError(f"HFEncoder: model_type {config.model_type!r} is not supported; "
                            f"allowed: {', '.join(ARCHITECTURES)}")
        if not type(model).__name__.endswith("ForMaskedLM"):
            raise UserError(f"HFEncoder wraps a masked-LM model (AutoModelForMaskedLM), got {type(model).__name__}")
        attention = getattr(config, "_attn_implementation", None)
        if attention not in COUNTED_ATTENTION:
            raise UserError(f"HFEncoder: attention implementation {attention!r} is not counted by kdbench's FLOP "
                            f"counter; build the model with attn_implementation in {', '.join(COUNTED_ATTENTION)}")
        self.model = model
        self.model_type = config.model_type
        self.num_layers = config.num_hidden_layers
        self.width = config.hidden_size
        self.vocab_size = config.vocab_size
        # RoBERTa numbers positions from pad_token_id + 1
        offset = config.pad_token_id + 1 if self.model_type == "roberta" else 0
        self.max_len = config.max_position_embeddings - offset
        self.train(model.training)  # the wrapper reports (and keeps) the wrapped model's mode

    @classmethod
    def from_config(cls, model_type: str, config: dict[str, Any]) -> "HFEncoder":
        """A randomly initialised model of ``model_type`` (bert, roberta, distilbert) from config fields.

        ``config`` holds fields of that type's config class (``BertConfig``:
        ``hidden_size``, ``num_hidden_layers``, ...); an unknown field is a
        :class:`~kdbench.UserError`. Initialisation draws from torch's global
        generator, as every kdbench model does.
        """
        transformers = import_transformers()
        if model_type not in ARCHITECTURES:
            raise UserError(f"HFEncoder.from_config: model_type {model_type!r} is not supported; "
                            f"allowed: {', '.join(ARCHITECTURES)}")
        config_class = transformers.AutoConfig.for_model(model_type).__class__
        known = set(config_class().to_dict()) | set(config_class.attribute_map)
        for key in config:
            if key not in known:
                raise UserError(f"HFEncoder.from_config: config.{key} is not a {config_class.__name__} field; "
                                f"allowed: {', '.join(sorted(k for k in known if not k.startswith('_')))}")
        hf_config = transformers.AutoConfig.for_model(model_type, **config)
        model = transformers.AutoModelForMaskedLM.from_config(hf_config, attn_implementation="sdpa")
        return cls(model)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "HFEncoder":
        """The masked-LM model saved with ``save_pretrained`` in the local folder ``path``.

        Only local files are read (``local_files_only=True``): a hub name is an
        error, never a download. The model comes back in eval mode, as
        ``transformers`` loads it.
        """
        model = load_local_pretrained(path, "HFEncoder", ARCHITECTURES, "AutoModelForMaskedLM", "a masked-LM model")
        return cls(model)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write the wrapped model to ``path`` (``from_pretrained`` here or in transformers reads it back)."""
        with quiet_progress():
            self.model.save_pretrained(path)

    @property
    def _base(self) -> nn.Module:
        return getattr(self.model, ARCHITECTURES[self.model_type][0])

    @property
    def _layers(self) -> nn.ModuleList:
        return getattr(self._base, ARCHITECTURES[self.model_type][1]).layer

    #: the internals ``forward(x, layers=[...], internals=(...))`` can return (see :class:`kdbench.LayerInternals`)
    available_internals = INTERNALS

    def hidden_size(self, layer: int) -> int:
        """The width of layer ``layer``'s output (every layer has the model's hidden size)."""
        check_layer(layer, self.num_layers)
        return self.width

    def layer_parameters(self, layer: int) -> list[nn.Parameter]:
        """Layer ``layer``'s parameters; layer 1 also owns the embeddings."""
        check_layer(layer, self.num_layers)
        params = list(self._layers[layer - 1].parameters())
        if layer == 1:
            params = [*self._base.embeddings.parameters(), *params]
        return params

    def attention_heads(self, layer: int) -> int:
        """The number of attention heads of layer ``layer`` (the config's ``num_attention_heads``)."""
        check_layer(layer, self.num_layers)
        return self.model.config.num_attention_heads

    def forward(self, x: torch.Tensor, upto: Optional[int] = None, mask: Optional[torch.Tensor] = None,
                pre_activation: bool = False, layers: Optional[Sequence[int]] = None,
                with_logits: bool = True, internals: Sequence[str] = ()
                ) -> torch.Tensor | LayerOutputs | InternalOutputs:
        depth = layers_to_run(self.num_layers, upto, layers, with_logits)
        want = check_internals(internals, self.available_internals, layers, "HFEncoder")
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds the model's {self.max_len} positions")
        h = embeddings = self._base.embeddings(input_ids=x)
        states, inside = [], {}
        looked_into = set(layers) if want - {"embeddings"} else set()
        for i, layer in enumerate(self._layers[:depth], start=1):
            with self._projections(layer, i in looked_into) as qkv:
                out = layer(h)
            h = out[0] if isinstance(out, tuple) else out  # transformers < 5 returns (hidden, ...)
            states.append(h)
            if qkv:
                inside[i] = attention_internals(*self._heads(qkv, i), want)[0]
        if upto is not None:
            return h
        logits = self._mlm_head(h[mask] if mask is not None else h) if with_logits else None
        if layers is None:
            return logits
        return layer_outputs(layers, states, logits, want, inside, embeddings)

    @contextlib.contextmanager
    def _projections(self, layer: nn.Module, capture: bool) -> Iterator[list[torch.Tensor]]:
        """While the layer runs: with ``capture``, the outputs of its query, key and value projections,
        caught by forward hooks (the tensors of the layer's own graph: gradients flow through them)."""
        caught: list[torch.Tensor] = []
        if not capture:
            yield caught
            return
        attention = layer.attention
        names = ("q_lin", "k_lin", "v_lin") if self.model_type == "distilbert" else ("query", "key", "value")
        owner = attention if self.model_type == "distilbert" else attention.self
        hooks = [getattr(owner, n).register_forward_hook(lambda mod, inp, out: caught.append(out)) for n in names]
        try:
            yield caught
        finally:
            for hook in hooks:
                hook.remove()

    def _heads(self, qkv: list[torch.Tensor], layer: int) -> list[torch.Tensor]:
        """``[batch, tokens, width]`` projections split into ``[batch, heads, tokens, head_dim]``."""
        heads = self.attention_heads(layer)
        return [t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in qkv]

    def _mlm_head(self, h: torch.Tensor) -> torch.Tensor:
        """The model's MLM head: transform (dense, activation, LayerNorm), then the vocabulary decoder."""
        m = self.model
        if self.model_type == "bert":
            return m.cls(h)
        if self.model_type == "roberta":
            return m.lm_head(h)
        return m.vocab_projector(m.vocab_layer_norm(m.activation(m.vocab_transform(h))))
