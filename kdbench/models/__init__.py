"""Layered models (see :class:`kdbench.api.LayeredModel`).

:class:`HFEncoder` wraps Hugging Face masked-LM models; it needs the optional
``transformers`` package only when one is built. :func:`load_exported` loads a
folder written by ``kdbench export``.
"""

from .encoder import Encoder
from .hf import HFEncoder
from .mlp import MLP
from .saving import load_exported

__all__ = ["Encoder", "HFEncoder", "MLP", "load_exported"]
