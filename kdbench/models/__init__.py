"""Layered models (see :class:`kdbench.api.LayeredModel`).

:class:`HFEncoder` wraps Hugging Face masked-LM models; it needs the optional
``transformers`` package only when one is built.
"""

from .encoder import Encoder
from .hf import HFEncoder
from .mlp import MLP

__all__ = ["Encoder", "HFEncoder", "MLP"]
