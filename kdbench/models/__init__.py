"""Layered models (see :class:`kdbench.api.LayeredModel`).

:class:`HFEncoder` wraps Hugging Face masked-LM models and :class:`HFDecoder`
GPT-2 causal LMs; they need the optional ``transformers`` package only when one
is built. :func:`load_exported` loads a folder written by ``kdbench export``.
"""

from kdbench.models.encoder import Encoder
from kdbench.models.hf import HFEncoder
from kdbench.models.hf_decoder import HFDecoder
from kdbench.models.mlp import MLP
from kdbench.models.saving import load_exported

__all__ = ["Encoder", "HFDecoder", "HFEncoder", "MLP", "load_exported"]
