"""Layered models (see :class:`kdbench.api.LayeredModel`)."""

from .encoder import Encoder
from .mlp import MLP

__all__ = ["Encoder", "MLP"]
