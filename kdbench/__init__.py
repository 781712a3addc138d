"""kdbench: a benchmark harness for knowledge distillation under matched FLOP budgets.

The public API for plugin authors::

    from kdbench import hookimpl, Task, TaskInstance, Method, MethodContext, Phase, Batch, Params, Recipe
    from kdbench import Clock, CoTrain, LayeredModel, LayerOutputs, logits, UserError
    from kdbench import distillation_loss, soft_cross_entropy, distill_phase, final_teacher_phase
    from kdbench import cotrained_teacher, lockstep_phases, MLP, Encoder

Results as pandas DataFrames (imported on first use, so the CLI starts without pandas)::

    from kdbench import load_results
    print(load_results("results/quickstart").leaderboard(fmt="md"))

Test helpers for plugin authors live in :mod:`kdbench.testing` (a pytest plugin).
"""

__version__ = "0.1.0"

from .api import (Batch, Clock, CoTrain, LayeredModel, LayerOutputs, Method, MethodContext, Params, Phase, Recipe,
                  Task, TaskInstance, logits)
from .errors import UserError
from .hookspecs import hookimpl
from .losses import (cotrained_teacher, distill_phase, distillation_loss, final_teacher_phase, lockstep_phases,
                     soft_cross_entropy)
from .models import MLP, Encoder

__all__ = [
    "Batch", "Clock", "CoTrain", "LayeredModel", "LayerOutputs", "Method", "MethodContext", "Params", "Phase",
    "Recipe", "Task", "TaskInstance", "logits", "hookimpl", "UserError", "distillation_loss", "soft_cross_entropy",
    "distill_phase", "final_teacher_phase", "cotrained_teacher", "lockstep_phases", "MLP", "Encoder", "__version__",
    "load_results", "Results",
]
_LAZY = {"load_results": "results", "Results": "results"}


def __getattr__(name: str):
    """The results layer, imported when first asked for (it imports pandas)."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
