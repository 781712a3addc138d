"""kdbench: a benchmark harness for knowledge distillation under matched FLOP budgets.

The public API for plugin authors::

    from kdbench import hookimpl, Task, TaskInstance, Method, MethodContext, Phase, Batch, Params, Recipe
    from kdbench import LayeredModel, LayerOutputs
    from kdbench import logits, distillation_loss, soft_cross_entropy, UserError

Test helpers for plugin authors live in :mod:`kdbench.testing` (a pytest plugin).
"""

__version__ = "0.1.0"

from .api import (Batch, LayeredModel, LayerOutputs, Method, MethodContext, Params, Phase, Recipe, Task, TaskInstance,
                  logits)
from .errors import UserError
from .hookspecs import hookimpl
from .losses import distillation_loss, soft_cross_entropy

__all__ = [
    "Batch", "LayeredModel", "LayerOutputs", "Method", "MethodContext", "Params", "Phase", "Recipe", "Task",
    "TaskInstance", "logits", "hookimpl", "distillation_loss", "soft_cross_entropy", "UserError", "__version__",
]
