"""Run identity: a run as typed data (:class:`Run`), and the ids of runs and teachers.

A run id is a short hash of everything that determines its result: the task
(name, version, resolved params, teacher seed and recipe), the method (name,
version, resolved params), the student recipe, the seed, the budget and the
evaluation settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, field
from typing import Any, Optional

from pydantic import BaseModel

from kdbench.api import Params, Recipe
from kdbench.plugins import Registry, load_plugins
from kdbench.suite.model import Evaluation, ResolvedBudget


@dataclass(frozen=True)
class Run:
    """One (task, teacher seed, method, seed) of a suite, fully resolved and typed."""

    run_id: str
    suite: str
    task: str
    task_label: str
    task_version: str
    task_params: Params  # the task plugin's validated params
    teacher_seed: int
    teacher_recipe: Recipe
    teacher_checkpoint: Optional[str]
    checkpoints: tuple  # teacher steps this run's method reads
    student_recipe: Recipe
    method: str
    method_label: str
    method_version: str
    method_params: Params  # the method plugin's validated params
    seed: int
    budget: ResolvedBudget
    eval: Evaluation
    streams: str = "1"  # how random streams are derived (kdbench.streams.VERSION; 1: before it was recorded)
    inputs: dict = field(default_factory=dict)  # content hashes of the files it reads (kdbench.inputs)
    save_every_s: float = 60.0
    keep_students: bool = True  # write the final student into the run folder (kdbench.run.students)
    # the final teacher read from a top-k logit cache ({"top_k": K}; kdbench.run.logit_cache), None: run it.
    # Part of the run id only when set, so runs without it keep the ids they had before it existed
    teacher_logits: Optional[dict] = None

    @property
    def task_identity(self) -> dict:
        """The task params, with every file a param names replaced by its content hash."""
        return {k: self.inputs.get(k, v) for k, v in plain(self.task_params).items()}

    @property
    def teacher_id(self) -> str:
        return teacher_id(self.task, self.task_version, self.task_identity, self.teacher_seed, self.teacher_recipe,
                          self.inputs.get("teacher_checkpoint"), self.streams)

    def config(self) -> dict:
        """The run as plain JSON data (config.json; params, recipes, budget and eval settings dumped)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        budget = self.budget.model_dump(exclude_none=True)
        if "method_params" in budget:
            budget["method_params"] = plain(self.budget.method_params)
        fields.update(task_params=plain(self.task_params), method_params=plain(self.method_params),
                      teacher_recipe=self.teacher_recipe.model_dump(mode="json"),
                      student_recipe=self.student_recipe.model_dump(mode="json"),
                      budget=budget, eval=self.eval.model_dump(mode="json"), checkpoints=list(self.checkpoints))
        if fields["teacher_logits"] is None:  # absent, as in every config written before the option existed
            del fields["teacher_logits"]
        return {**fields, "teacher_id": self.teacher_id}

    @classmethod
    def from_config(cls, config: dict, registry: Optional[Registry] = None) -> "Run":
        """The run a ``config()`` (config.json) describes, its params typed by ``registry``'s plugins
        (default: the built-in and installed ones; validated: a config of another version of a plugin
        may no longer fit it)."""
        registry = registry if registry is not None else load_plugins()
        fields = {k: v for k, v in config.items() if k in cls.__dataclass_fields__}
        budget = ResolvedBudget.model_validate(fields["budget"])
        if budget.method is not None:
            budget = budget.model_copy(update={"method_params": registry.methods[budget.method].cls.Params
                                               .model_validate(budget.method_params or {})})
        fields.update(checkpoints=tuple(fields["checkpoints"]), budget=budget,
                      task_params=registry.tasks[fields["task"]].cls.Params.model_validate(fields["task_params"]),
                      method_params=registry.methods[fields["method"]].cls.Params.model_validate(
                          fields["method_params"]),
                      teacher_recipe=Recipe.model_validate(fields["teacher_recipe"]),
                      student_recipe=Recipe.model_validate(fields["student_recipe"]),
                      eval=Evaluation.model_validate(fields["eval"]))
        return cls(**fields)


def plain(params: Any) -> Any:
    """Params as JSON data (``model_dump(mode="json")``: what config.json and the run id hold)."""
    return params.model_dump(mode="json") if isinstance(params, BaseModel) else params


def identity(run: Run) -> dict:
    """Everything that determines a run's result: its config without labels, the suite's name,
    the save cadence, which checkpoints are stored or whether the student is kept, and with files
    as their content hashes."""
    return config_identity(run.config())


def config_identity(config: dict) -> dict:
    """:func:`identity` of a run as its config.json records it (what the results layer reads,
    without the plugins): recipes, budget and evaluation read with today's defaults."""
    fields = {name: f.default if f.default is not MISSING else f.default_factory()
              for name, f in Run.__dataclass_fields__.items()
              if f.default is not MISSING or f.default_factory is not MISSING}
    fields.update({k: v for k, v in config.items() if k in Run.__dataclass_fields__})
    inputs = fields["inputs"] or {}
    fields.update(task_params={k: inputs.get(k, v) for k, v in fields["task_params"].items()},
                  teacher_checkpoint=inputs.get("teacher_checkpoint"),
                  teacher_recipe=Recipe.model_validate(fields["teacher_recipe"]).model_dump(mode="json"),
                  student_recipe=Recipe.model_validate(fields["student_recipe"]).model_dump(mode="json"),
                  budget=budget_identity(ResolvedBudget.model_validate(fields["budget"])),
                  eval=Evaluation.model_validate(fields["eval"]).model_dump(mode="json"))
    if fields.get("teacher_logits") is None:  # no cache: the identity runs had before the option existed
        fields.pop("teacher_logits", None)
    return {k: v for k, v in fields.items() if k not in ("run_id", "suite", "task_label", "method_label",
                                                          "save_every_s", "keep_students", "checkpoints", "inputs")}


def budget_identity(budget: ResolvedBudget) -> dict:
    """What of a budget determines a result: its FLOPs once priced (so "4000 steps of one-shot" is
    the same budget whatever one-shot's temperature, and the same as those FLOPs given raw), else
    the budget as given (student steps, raw FLOPs, or a run recorded before budgets were priced)."""
    if budget.priced_flops is not None:
        return {"flops": budget.priced_flops, "counts": budget.counts}
    dumped = budget.model_dump(exclude_none=True)
    if "method_params" in dumped:
        dumped["method_params"] = plain(budget.method_params)
    return dumped


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
