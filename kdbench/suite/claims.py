"""A suite's ``claims:`` block: the claims its results are checked against, and their validation.

::

    claims:
      - name: progressive beats one-shot
        better: progressive        # method labels of the suite
        than: one-shot
        metric: accuracy           # default: the task's ranking metric
        holds_on: 0.8              # the fraction of teacher seeds on which it must hold (default 1)
        task: parity-mlp           # optional: a task label (default: every task of the suite)
        min_seeds: 2               # paired student seeds needed at a teacher seed (default 2)

A metric is ``metric`` (the task's ranking metric), that metric's own name
(``accuracy``, ``masked_accuracy``), ``auc``, ``flops_to_target`` (needs ``eval.target``),
``agreement`` or ``teacher_kl``. The other numbers a task's ``evaluate()`` returns
(``loss``, ...) are not allowed: which way they are better is not known. Claims never
change a run's id: they judge results, they do not make them.

:func:`validate_claims` checks everything the suite alone tells (method and task labels,
names, ``flops_to_target`` without a target) when the suite is read;
:func:`validate_claim_metrics` checks a metric's name against each task's ranking metric,
which is known once the tasks are built (:func:`kdbench.run.validation.check_runs`,
before anything trains). :mod:`kdbench.results.claims` evaluates them on a results folder.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from kdbench.errors import UserError
from kdbench.suite.file import excerpt
from kdbench.suite.model import Claim, Suite
from kdbench.suite.schema import unknown_name

TASK_METRIC = "metric"  # the task's ranking metric, whatever its name
# metrics every task has, and which way each is better: None means the task's own direction
METRICS = {TASK_METRIC: None, "auc": None, "flops_to_target": "lower", "agreement": "higher", "teacher_kl": "lower"}


def method_labels(suite: Suite) -> list[str]:
    """The suite's method labels, in order."""
    return [e.label or e.name for e in suite.methods]


def task_labels(suite: Suite) -> list[str]:
    """The suite's task labels, in order."""
    return [e.label or e.name for e in suite.tasks]


def claim_tasks(claim: Claim, suite: Suite) -> list[str]:
    """The task labels ``claim`` is judged on: its ``task``, else every task of the suite."""
    return [claim.task] if claim.task is not None else task_labels(suite)


def validate_claims(suite: Suite, path: Path) -> None:
    """Raise :class:`UserError` (file, ``claims[i].field``, allowed values) for the first claim that
    names a method or task the suite lacks, repeats a name, compares a method with itself, or asks
    for FLOPs to a target the suite does not set."""
    methods, tasks, names = method_labels(suite), task_labels(suite), set()
    for i, claim in enumerate(suite.claims):
        where = f"claims[{i}]"
        if claim.name in names:
            raise UserError(f"{path}: {where}.name: {excerpt(claim.name)} appears twice; give each claim its own name")
        names.add(claim.name)
        for field in ("better", "than"):
            label = getattr(claim, field)
            if label not in methods:
                raise unknown_name(path, f"{where}.{field}", "method label", label, methods)
        if claim.better == claim.than:
            raise UserError(f"{path}: {where}.than: {claim.than!r} is also `better`: a claim compares two "
                            f"different methods; allowed: {', '.join(m for m in methods if m != claim.better)}")
        if claim.task is not None and claim.task not in tasks:
            raise unknown_name(path, f"{where}.task", "task label", claim.task, tasks)
        if claim.metric == "flops_to_target" and suite.eval.target is None:
            raise UserError(f"{path}: {where}.metric: flops_to_target needs eval.target (the metric value to "
                            f"reach); allowed without it: {', '.join(m for m in METRICS if m != 'flops_to_target')} "
                            "or the task's metric")


def validate_claim_metrics(suite: Suite, path: Path, task_metrics: dict[str, tuple[str, bool]]) -> None:
    """Raise :class:`UserError` for the first claim whose metric is neither one every task has
    (:data:`METRICS`) nor the ranking metric of each task it is judged on. ``task_metrics``: per
    task label, (its metric's name, higher is better), as the built tasks report them."""
    for i, claim in enumerate(suite.claims):
        if claim.metric is None or claim.metric in METRICS:
            continue
        for task in claim_tasks(claim, suite):
            name = task_metrics[task][0]
            if claim.metric != name:
                allowed = sorted({name, *METRICS})
                hint = difflib.get_close_matches(claim.metric[:200], allowed, n=1)
                raise UserError(f"{path}: claims[{i}].metric: unknown metric {excerpt(claim.metric)} for task {task}"
                                + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; allowed: {', '.join(allowed)}"
                                " (other numbers the task evaluates have no known direction)")


def higher_is_better(metric: str, task_higher: bool) -> bool:
    """Which way ``metric`` (a claim's, resolved: not None) is better on a task whose ranking metric
    is better higher when ``task_higher``: the task's way for its metric and AUC, else :data:`METRICS`'."""
    direction = METRICS.get(metric)
    return task_higher if direction is None else direction == "higher"
