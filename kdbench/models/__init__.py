"""Layered models (see :class:`kdbench.api.LayeredModel`)."""

from .mlp import MLP

__all__ = ["MLP"]
