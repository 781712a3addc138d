"""kdbench: a benchmark harness for knowledge distillation under matched FLOP budgets.

The public API for plugin authors::

    from kdbench import hookimpl, Task, TaskInstance, Method, MethodContext, Phase, Batch, Params, Recipe
    from kdbench import Clock, CoTrain, LayeredModel, LayerOutputs, logits, UserError
    from kdbench import distillation_loss, soft_cross_entropy, distill_phase, final_teacher_phase
    from kdbench import cotrained_teacher, lockstep_phases, MLP, Encoder

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
]
