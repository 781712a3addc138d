"""A budget given as "N steps of method M" priced in FLOPs when a suite is loaded.

A run's id holds its budget's FLOPs, not the params of the method that defined
them (:func:`kdbench.suite.identity.budget_identity`): changing one-shot's
temperature in a suite whose budget is "4000 steps of one-shot" reruns one-shot's
runs only. Pricing builds the task on the CPU and measures one step of the
reference method's last phase as validation does (:mod:`kdbench.run.validation`):
on a small batch, scaled to the student's batch size (FLOPs grow linearly with
the batch), so that a paper-sized suite is priced without a paper-sized batch in
memory. The price identifies the budget; the runner still measures the exact
budget at the real batch size. FLOP counts do not depend on the device or the
seeds, so one price serves every run of a task entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from kdbench.plugins import Registry
from kdbench.run.runner import budget_flops, build_task
from kdbench.run.sizes import SizeCheck
from kdbench.run.validation import check_model_sizes, estimated_phases
from kdbench.suite.expand import LoadedSuite, read_suite
from kdbench.suite.identity import Run, short_hash

_PRICES: dict[str, float] = {}  # one process prices a (task, budget) once however often suites are loaded


def price_budget(run: Run, registry: Registry) -> float:
    """The FLOPs of ``run``'s budget (steps of a method), measured on the CPU (cached per process)."""
    key = short_hash([run.task, run.task_version, run.task_identity, run.teacher_recipe.model_dump(mode="json"),
                      run.student_recipe.model_dump(mode="json"), run.budget.model_dump(exclude={"priced_flops"}),
                      str(registry.methods[run.budget.method].cls.version), list(run.checkpoints)], 16)
    if key not in _PRICES:
        cpu = torch.device("cpu")
        task = build_task(run, registry, cpu, None)
        # the models are built on the CPU to be measured: sized first (kdbench.run.sizes), so a huge one is refused
        check_model_sizes(task, run, f"tasks ({run.task_label}).params", SizeCheck(cpu))
        _PRICES[key] = budget_flops(run, registry, task, cpu, estimated_phases)
    return _PRICES[key]


def load_suite(path: Union[str, Path], registry_factory, extra_plugins: tuple = ()) -> tuple[LoadedSuite, Registry]:
    """Read ``path`` into runs ready to train (:func:`kdbench.suite.expand.read_suite`), budgets in
    steps of a method priced in FLOPs: the suite as ``kdbench run`` sees it."""
    return read_suite(Path(path), registry_factory, extra_plugins, price_budget)
