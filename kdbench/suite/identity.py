"""Run identity: a run as typed data (:class:`Run`), and the ids of runs and teachers.

A run id is a short hash of everything that determines its result: the task
(name, version, resolved params, teacher seed and recipe), the method (name,
version, resolved params), the student recipe, the seed, the budget and the
evaluation settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from kdbench.api import Recipe
from kdbench.suite.model import Evaluation, ResolvedBudget


@dataclass(frozen=True)
class Run:
    """One (task, teacher seed, method, seed) of a suite, fully resolved and typed."""

    run_id: str
    suite: str
    task: str
    task_label: str
    task_version: str
    task_params: dict
    teacher_seed: int
    teacher_recipe: Recipe
    teacher_checkpoint: Optional[str]
    checkpoints: tuple  # teacher steps this run's method reads
    student_recipe: Recipe
    method: str
    method_label: str
    method_version: str
    method_params: dict
    seed: int
    budget: ResolvedBudget
    eval: Evaluation
    streams: str = "1"  # how random streams are derived (kdbench.streams.VERSION; 1: before it was recorded)
    inputs: dict = field(default_factory=dict)  # content hashes of the files it reads (kdbench.inputs)
    save_every_s: float = 60.0
    keep_students: bool = True  # write the final student into the run folder (kdbench.run.students)

    @property
    def task_identity(self) -> dict:
        """The task params, with every file a param names replaced by its content hash."""
        return {k: self.inputs.get(k, v) for k, v in self.task_params.items()}

    @property
    def teacher_id(self) -> str:
        return teacher_id(self.task, self.task_version, self.task_identity, self.teacher_seed, self.teacher_recipe,
                          self.inputs.get("teacher_checkpoint"), self.streams)

    def config(self) -> dict:
        """The run as plain JSON data (config.json; the recipes, budget and eval settings dumped)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        fields.update(teacher_recipe=self.teacher_recipe.model_dump(mode="json"),
                      student_recipe=self.student_recipe.model_dump(mode="json"),
                      budget=self.budget.model_dump(exclude_none=True), eval=self.eval.model_dump(mode="json"),
                      checkpoints=list(self.checkpoints))
        return {**fields, "teacher_id": self.teacher_id}

    @classmethod
    def from_config(cls, config: dict) -> "Run":
        fields = {k: v for k, v in config.items() if k in cls.__dataclass_fields__}
        fields.update(checkpoints=tuple(fields["checkpoints"]),
                      teacher_recipe=Recipe.model_validate(fields["teacher_recipe"]),
                      student_recipe=Recipe.model_validate(fields["student_recipe"]),
                      budget=ResolvedBudget.model_validate(fields["budget"]),
                      eval=Evaluation.model_validate(fields["eval"]))
        return cls(**fields)


def identity(run: Run) -> dict:
    """Everything that determines a run's result: its config without labels, the suite's name,
    the save cadence, which checkpoints are stored or whether the student is kept, and with files
    as their content hashes."""
    config = {**run.config(), "task_params": run.task_identity,
              "teacher_checkpoint": run.inputs.get("teacher_checkpoint"), "budget": budget_identity(run.budget)}
    return {k: v for k, v in config.items() if k not in ("run_id", "teacher_id", "suite", "task_label", "method_label",
                                                          "save_every_s", "keep_students", "checkpoints", "inputs")}


def budget_identity(budget: ResolvedBudget) -> dict:
    """What of a budget determines a result: its FLOPs once priced (so "4000 steps of one-shot" is
    the same budget whatever one-shot's temperature, and the same as those FLOPs given raw), else
    the budget as given (student steps, raw FLOPs, or a run recorded before budgets were priced)."""
    if budget.priced_flops is not None:
        return {"flops": budget.priced_flops, "counts": budget.counts}
    return budget.model_dump(exclude_none=True)


def run_identity(run: Run) -> str:
    """The run id: a short hash of :func:`identity`."""
    return short_hash(identity(run), 12)


def short_hash(obj: Any, n: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def teacher_id(task: str, version: str, params: dict, seed: int, recipe: Recipe, checkpoint: Optional[str],
               streams: str) -> str:
    """The teacher cache key: task, version, params, seed, recipe, given checkpoint file, stream scheme."""
    # checkpoint cadence does not change the final teacher, so it is not part of the id
    recipe = recipe.model_dump(mode="json", exclude={"checkpoint_every"})
    return f"{task}-{short_hash([task, version, params, seed, recipe, checkpoint, 'streams', streams], 8)}"


# what two runs of one config may differ by
SEEDS = ("seed", "teacher_seed")
