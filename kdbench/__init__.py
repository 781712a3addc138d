"""kdbench: a benchmark harness for knowledge distillation under matched FLOP budgets.

The public API for plugin authors::

    from kdbench import hookimpl, Task, TaskInstance, Method, MethodContext, Phase, Batch, Params, Recipe
    from kdbench import Clock, CoTrain, LayeredModel, LayerOutputs, logits, UserError
    from kdbench import LayerInternals, InternalOutputs, require_internals   # transformers' attention internals
    from kdbench import distillation_loss, soft_cross_entropy, reverse_kl, distill_phase, final_teacher_phase
    from kdbench import DistillOptions, BasicDistillOptions, Plateau, new_param, cotrained_teacher, lockstep_phases
    from kdbench import MLP, Encoder

The command line as functions, with results as pandas DataFrames (imported on first use,
so the CLI starts without pandas)::

    res = kdbench.run_suite("suites/quickstart.yaml", output="results/qs", jobs=2)
    res.leaderboard()                                   # one row per (task, method)
    kdbench.load_results("results/qs").leaderboard(fmt="md")
    kdbench.check_claims("results/qs").claims          # the suite's claims judged on its runs
    kdbench.compare_results(["results/a", "results/b"]).frame   # the same rows across folders
    kdbench.run_suite("suites/quickstart.yaml", progress=print)  # a kdbench.ProgressEvent per start, step, end

Test helpers for plugin authors live in :mod:`kdbench.testing` (a pytest plugin).
"""

__version__ = "0.5.0"

from importlib import import_module

from kdbench import _moved
from kdbench.api import (Batch, CausalLMInstance, Clock, CoTrain, InternalOutputs, LayeredModel, LayerInternals, LayerOutputs, Method,
                         MethodContext, Params, Phase, Recipe, Task, TaskInstance, logits, new_param, require_internals)
from kdbench.distill_options import BasicDistillOptions, DistillOptions
from kdbench.errors import UserError
from kdbench.hookspecs import hookimpl
from kdbench.losses import (cotrained_teacher, distill_phase, distillation_loss, final_teacher_phase, generalised_jsd,
                            lockstep_phases, reverse_kl, soft_cross_entropy)
from kdbench.models import MLP, Encoder
from kdbench.plateau import Plateau

_moved.install()  # kdbench 0.1's module paths (kdbench.engine, ...) still import, with a warning

__all__ = [
    "Batch", "Clock", "CoTrain", "LayeredModel", "LayerOutputs", "Method", "MethodContext", "Params", "Phase",
    "Recipe", "Task", "TaskInstance", "logits", "hookimpl", "UserError", "distillation_loss", "soft_cross_entropy",
    "distill_phase", "final_teacher_phase", "cotrained_teacher", "lockstep_phases", "MLP", "Encoder", "__version__",
    "reverse_kl", "generalised_jsd", "DistillOptions", "BasicDistillOptions", "Plateau", "new_param",
    "LayerInternals", "InternalOutputs", "require_internals", "CausalLMInstance",
    "load_results", "Results", "run_suite", "validate_suite", "plan_suite", "suite_status", "check_claims",
    "compare_results",
    "ProgressEvent",
]
_LAZY = {"load_results": "results", "Results": "results", "run_suite": "commands", "validate_suite": "commands",
         "plan_suite": "commands", "suite_status": "commands", "check_claims": "commands",
         "compare_results": "results.compare", "ProgressEvent": "progress"}


def __getattr__(name: str):
    """The Python API (results layer and commands), imported when first asked for (it imports pandas)."""
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
