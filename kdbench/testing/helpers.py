"""The helpers behind :mod:`kdbench.testing`: a tiny task, and a method run through the real engine."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from kdbench.api import Phase, TaskInstance
from kdbench.errors import UserError
from kdbench.plugins import PluginInfo, load_plugins
from kdbench.run.runner import execute_run
from kdbench.suite.expand import expand
from kdbench.suite.identity import Run
from kdbench.suite.model import Budget, Evaluation, MethodEntry, Suite, TaskEntry

TINY_BUDGET = 5e6  # FLOPs: ~130 one-shot (~375 labels) steps of the tiny task at batch 16


@dataclass
class TinyTask:
    """A task as a suite's ``tasks:`` entry gives it: name (or Task class), params, recipes.

    ``name`` may be a registered task name or a :class:`kdbench.Task` subclass
    (registered on the fly, so an author can test a task that is not installed).
    """

    name: Any = "parity-mlp"
    params: dict = field(default_factory=lambda: {"n": 10, "k": 2, "teacher_width": 64, "student_width": 16,
                                                  "eval_size": 256})
    teacher: dict = field(default_factory=lambda: {"optimizer": "adam", "lr": 0.01, "batch_size": 32,
                                                   "steps": 300, "checkpoint_every": 100_000})
    student: dict = field(default_factory=lambda: {"optimizer": "adam", "lr": 0.01, "batch_size": 16})


def tiny_encoder_task() -> TinyTask:
    """A sparse-parity task with transformer teacher and student (6 tokens, 2 blocks, widths 16 and 8):
    the :class:`TinyTask` for methods that reach into token representations."""
    return TinyTask(name="parity-transformer",
                    params={"n": 6, "k": 2, "teacher_layers": 2, "teacher_heads": 2, "teacher_width": 16,
                            "student_layers": 2, "student_heads": 2, "student_width": 8, "eval_size": 128},
                    teacher={"optimizer": "adam", "lr": 0.003, "batch_size": 32, "steps": 100},
                    student={"optimizer": "adam", "lr": 0.003, "batch_size": 16})


@dataclass
class MethodRun:
    """What :func:`run_method` returns: the run, its phases as allotted, and the outcome."""

    run: Run  # the run as the suite would hold it (recipes and budget typed)
    curve: list[dict]  # the curve points: step, samples, flops, phase, train_loss, metrics..., time
    status: str  # "finished" or "diverged"
    phases: list[Phase]  # the phases the method returned
    phase_steps: list[int]  # steps each phase ran
    phase_step_flops: list[int]  # measured FLOPs of one step of each phase
    budget_flops: float
    flops: int  # student FLOPs spent
    student: nn.Module  # the trained student model
    task: TaskInstance

    @property
    def final(self) -> dict:
        """The last curve point (metrics after the last step)."""
        return self.curve[-1]

    def metric(self, name: Optional[str] = None) -> float:
        """The final value of ``name`` (default: the task's ranking metric)."""
        return float(self.final[name or self.task.metric])

    def phase_points(self, phase: str) -> list[dict]:
        """The curve points recorded during ``phase``."""
        return [p for p in self.curve if p["phase"] == phase]


def _plugin_name(registry, kind: str, plugin: Union[str, type]) -> str:
    """The name of ``plugin`` in ``registry``, registering a class that is not installed."""
    table = getattr(registry, kind + "s")
    if isinstance(plugin, str):
        if plugin not in table:
            raise UserError(f"run_method: unknown {kind} {plugin!r}; allowed: {', '.join(sorted(table))}")
        return plugin
    name = getattr(plugin, "name", None)
    if not name:
        raise UserError(f"run_method: {plugin!r} has no name")
    table[name] = PluginInfo(kind, name, str(getattr(plugin, "version", "1")), "kdbench.testing", plugin)
    return name


@contextmanager
def torch_threads(threads: Optional[int]):
    """Set torch's CPU thread count for a block, then restore it."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_method(method: Union[str, type], params: Optional[dict] = None, *, task: Optional[TinyTask] = None,
               budget_flops: float = TINY_BUDGET, seed: int = 0, teacher_seed: int = 0, eval_points: int = 4,
               teacher: str = "trained", out: Optional[Path] = None, device: str = "cpu",
               threads: Optional[int] = 1) -> MethodRun:
    """Run ``method`` with ``params`` on ``task`` under ``budget_flops`` through the engine. (Its keyword
    arguments are a one-run suite's fields and the harness's, so a test names only what it varies.)

    ``teacher="trained"`` trains the task's teacher through the teacher cache in
    ``out`` (once per teacher id; default: a temporary folder removed afterwards);
    ``"probe"`` uses an untrained teacher of the right shape (enough to test
    shapes and FLOPs, not learning). Bad params raise :class:`kdbench.UserError`
    naming the field, as ``kdbench run`` does. ``threads`` sets torch's CPU
    threads for the call (restored afterwards): tiny models run fastest on one,
    and several threads on a busy machine run many times slower.
    """
    if teacher not in ("trained", "probe"):
        raise ValueError(f"teacher must be 'trained' or 'probe', got {teacher!r}")
    with ExitStack() as stack:
        stack.enter_context(torch_threads(threads))
        if out is None:
            out = stack.enter_context(tempfile.TemporaryDirectory(prefix="kdbench-testing-"))
        registry, run = resolve_run(method, params, task=task, budget_flops=budget_flops, seed=seed,
                                    teacher_seed=teacher_seed, eval_points=eval_points)
        return _run(registry, run, Path(out), device, teacher)


def resolve_run(method: Union[str, type], params: Optional[dict] = None, *, task: Optional[TinyTask] = None,
                budget_flops: float = TINY_BUDGET, seed: int = 0, teacher_seed: int = 0, eval_points: int = 4):
    """``(registry, run)``: ``method`` on ``task`` as a one-run suite, validated exactly as ``kdbench run``
    validates a suite (bad params raise :class:`kdbench.UserError` naming ``methods[0].params.FIELD``)."""
    task = task or TinyTask()
    registry = load_plugins()
    method_name = _plugin_name(registry, "method", method)
    task_name = _plugin_name(registry, "task", task.name)
    suite = Suite(name="run-method", seeds=[seed], teacher_seeds=[teacher_seed], budget=Budget(flops=budget_flops),
                  eval=Evaluation(points=eval_points),
                  tasks=[TaskEntry(name=task_name, params=task.params, teacher=task.teacher, student=task.student)],
                  methods=[MethodEntry(name=method_name, params=params or {})])
    (run,) = expand(suite, Path("<run_method>"), registry)
    return registry, run


def _run(registry, run: Run, out: Path, device: str, teacher: str) -> MethodRun:
    """Execute ``run`` (again, whatever is stored) and describe it as a :class:`MethodRun`."""
    outcome = execute_run(run, registry, out, torch.device(device), probe_teacher=teacher == "probe", rerun=True)
    if outcome.error is not None:  # recorded as a failed run; the author wants the exception itself
        raise outcome.error
    prepared, summary = outcome.prepared, outcome.summary
    return MethodRun(run=run, curve=outcome.curve, status=summary["status"],
                     phases=[p.phase for p in prepared.job.plan], phase_steps=prepared.phase_steps,
                     phase_step_flops=prepared.phase_flops,
                     budget_flops=prepared.budget_flops, flops=summary["flops"], student=prepared.job.model,
                     task=outcome.task)
