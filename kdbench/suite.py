"""The suite file: its pydantic schema, validation against the loaded plugins,
and expansion into runs with stable ids.

A run id is a short hash of everything that determines its result: the task
(name, version, resolved params, teacher seed and recipe), the method (name,
version, resolved params), the student recipe, the seed, the budget and the
evaluation settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .api import Recipe
from .errors import UserError
from .plugins import Registry
from .inputs import hash_file, hash_params, resolve_params, resolve_path
from .loggers.schema import LoggerEntry
from .schema import format_validation_error, unknown_name
from .streams import VERSION as STREAMS_VERSION
from .suitefile import excerpt, read_suite_file
from .tune_spec import TunePlan, TuneSpec, resolve_tune

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # names become folder names: no separators
NAME_MAX = 100  # a folder name must fit the file system's limit (255 bytes) with room to spare


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Budget(_Strict):
    """The student's budget per run. Matched FLOPs: raw ``flops``, or the FLOPs of ``steps``
    steps of ``method``'s last phase (how papers phrase it: "8000 steps of one-shot").
    Matched steps: ``student_steps`` steps for every method (their FLOPs reported, not matched)."""

    flops: Optional[float] = Field(None, gt=0, description="FLOPs per student run")
    steps: Optional[int] = Field(None, gt=0, description="with method: the FLOPs of this many steps of it")
    method: Optional[str] = Field(None, description="the method whose steps price a budget in steps")
    student_steps: Optional[int] = Field(None, gt=0, description="the same number of student steps for every "
                                                                 "method (FLOPs reported, not matched)")
    counts: Literal["student", "total"] = Field(
        "student", description="student FLOPs only, or also the teacher's training (cached or co-trained)")

    @model_validator(mode="after")
    def _one_form(self):
        if sum(x is not None for x in (self.flops, self.steps, self.student_steps)) != 1:
            raise ValueError("give one of flops, steps (with method) or student_steps")
        if self.steps is not None and self.method is None:
            raise ValueError("steps needs method: the budget is the FLOPs of that many steps of that method")
        if self.steps is None and self.method is not None:
            raise ValueError("method goes with steps, not with flops or student_steps")
        if self.student_steps is not None and self.counts == "total":
            raise ValueError("counts: total needs a FLOP budget (flops, or steps with method); "
                             "student_steps matches steps, not FLOPs")
        return self


class Evaluation(_Strict):
    """When runs are evaluated and what the leaderboard reports."""

    points: int = Field(20, ge=1, le=10_000, description="evenly spaced FLOP points on each curve")
    target: Optional[float] = Field(None, description="metric value for the FLOPs-to-target column")


class TaskEntry(_Strict):
    name: str
    label: Optional[str] = Field(None, pattern=NAME_PATTERN, max_length=NAME_MAX)
    params: dict[str, Any] = {}
    teacher: dict[str, Any] = Field({}, description="overrides of the task's teacher recipe")
    student: dict[str, Any] = Field({}, description="overrides of the task's student recipe")
    budget: Optional[Budget] = None
    teacher_checkpoint: Optional[str] = Field(None, description="use this state dict as the final teacher")


class MethodEntry(_Strict):
    name: str
    label: Optional[str] = Field(None, pattern=NAME_PATTERN, max_length=NAME_MAX)
    params: dict[str, Any] = {}


class LauncherEntry(_Strict):
    """Which launcher executes the suite's runs, and its options (validated by its ``Params``)."""

    name: str = "local"
    options: dict[str, Any] = {}


class Suite(_Strict):
    """A benchmark: tasks x methods x seeds under one budget per task."""

    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX)
    description: str = ""
    output: Optional[str] = None
    seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    teacher_seeds: list[Annotated[int, Field(ge=0)]] = Field([0], min_length=1)
    budget: Optional[Budget] = None
    eval: Evaluation = Evaluation()
    tasks: list[TaskEntry] = Field(min_length=1)
    methods: list[MethodEntry] = Field(min_length=1)
    plugins: list[str] = []
    save_every_s: float = Field(60.0, gt=0, description="seconds between resumable state saves")
    keep_students: bool = Field(True, description="keep each finished run's student (for kdbench export)")
    launcher: LauncherEntry = LauncherEntry()
    loggers: list[LoggerEntry] = Field([], description="experiment trackers that follow every run (--log)")
    tune: Optional[TuneSpec] = Field(None, description="choose each method's settings on dev seeds first")

    @field_validator("seeds", "teacher_seeds")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v


class ResolvedBudget(_Strict):
    """A run's budget as expansion resolved it: raw ``flops``, or ``steps`` of ``method``
    (with that method entry's resolved ``method_params``), and what it ``counts``."""

    flops: Optional[float] = None
    steps: Optional[int] = None
    method: Optional[str] = None
    method_params: Optional[dict[str, Any]] = None
    student_steps: Optional[int] = None
    counts: Literal["student", "total"] = "student"

    @property
    def counts_total(self) -> bool:
        return self.counts == "total"


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
    keep_students: bool = True  # write the final student into the run folder (kdbench.students)

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
              "teacher_checkpoint": run.inputs.get("teacher_checkpoint")}
    return {k: v for k, v in config.items() if k not in ("run_id", "teacher_id", "suite", "task_label", "method_label",
                                                          "save_every_s", "keep_students", "checkpoints", "inputs")}


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


@dataclass
class LoadedSuite:
    """A validated suite, its source path, and its runs."""

    suite: Suite
    path: Path
    runs: list[Run] = field(default_factory=list)
    plugin_paths: tuple = ()  # every plugin file loaded: the command line's, then the suite's
    tune: Optional[TunePlan] = None  # the validated tune: block (kdbench.tune_spec)

    @property
    def output(self) -> Path:
        return Path(self.suite.output or f"results/{self.suite.name}")


def parse_suite(path: Path) -> Suite:
    data = read_suite_file(path)
    try:
        return Suite.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(path, err, model=Suite)) from err


def _validate_params(path: Path, where: str, model, params: dict):
    try:
        return model.model_validate(params)
    except ValidationError as err:
        raise UserError(format_validation_error(path, err, where, model)) from err


def _recipe(path: Path, where: str, default: Recipe, overrides: dict) -> Recipe:
    _validate_params(path, where, Recipe, overrides)  # names the bad key against the recipe's fields
    return _validate_params(path, where, Recipe, {**default.model_dump(), **overrides})


def check_state_dict(path: Path, where: str, file: Path) -> Path:
    """``file`` resolved, if it holds a PyTorch state dict (loaded with weights_only=True)."""
    import torch

    if not file.is_file():
        raise UserError(f"{path}: {where}: no such file {str(file)!r}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: {where}: {file} is not a PyTorch state dict ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: {where}: {file} is not a PyTorch state dict (name -> tensor)")
    return file.resolve()


def expand(suite: Suite, path: Path, registry: Registry) -> list[Run]:
    """Validate every plugin reference and param against ``registry``; return the runs."""
    path = Path(path)
    tasks, methods = [], []
    for i, entry in enumerate(suite.tasks):
        if entry.name not in registry.tasks:
            raise unknown_name(path, f"tasks[{i}].name", "task", entry.name, list(registry.tasks),
                               registry.failure_lines())
        cls = registry.tasks[entry.name].cls
        where = f"tasks[{i}].params"
        raw = resolve_params(entry.params, cls.Params, path.parent, f"{path}: {where}")
        params = _validate_params(path, where, cls.Params, raw)
        inputs = hash_params(params, f"{path}: {where}")
        task = cls()
        teacher = _recipe(path, f"tasks[{i}].teacher", task.teacher_recipe(params), entry.teacher)
        student = _recipe(path, f"tasks[{i}].student", task.student_recipe(params), entry.student)
        budget = entry.budget or suite.budget
        if budget is None:
            raise UserError(f"{path}: budget: missing (give it for the suite or for tasks[{i}])")
        checkpoint = None
        if entry.teacher_checkpoint is not None:
            where = f"tasks[{i}].teacher_checkpoint"
            file = Path(resolve_path(entry.teacher_checkpoint, path.parent, f"{path}: {where}"))
            checkpoint = str(check_state_dict(path, where, file))
            inputs["teacher_checkpoint"] = hash_file(file, f"{path}: {where}")
        tasks.append((entry, cls, params, teacher, student, budget, checkpoint, inputs))
    labels = set()
    for i, entry in enumerate(suite.methods):
        if entry.name not in registry.methods:
            raise unknown_name(path, f"methods[{i}].name", "method", entry.name, list(registry.methods),
                               registry.failure_lines())
        label = entry.label or entry.name
        if label in labels:
            raise UserError(f"{path}: methods[{i}].label: {label!r} appears twice; give each entry a distinct label")
        labels.add(label)
        cls = registry.methods[entry.name].cls
        methods.append((entry, cls, _validate_params(path, f"methods[{i}].params", cls.Params, entry.params)))
    task_labels = [t[0].label or t[0].name for t in tasks]
    if len(set(task_labels)) != len(task_labels):
        raise UserError(f"{path}: tasks: two entries share the label {task_labels}; give each a distinct label")
    for i, (_, _, _, _, _, budget, _, _) in enumerate(tasks):
        if budget.method is not None and budget.method not in labels and budget.method not in registry.methods:
            raise unknown_name(path, "budget.method", "method", budget.method, sorted(labels | set(registry.methods)),
                               registry.failure_lines())

    runs = []
    for (entry, tcls, tparams, trecipe, srecipe, budget, checkpoint, inputs) in tasks:
        resolved = ResolvedBudget(flops=budget.flops, student_steps=budget.student_steps, counts=budget.counts)
        if budget.method is not None:  # resolve to the method entry it names, params included
            ref = next(((e.name, mp) for e, _, mp in methods if (e.label or e.name) == budget.method),
                       (budget.method, registry.methods[budget.method].cls.Params()))
            resolved = ResolvedBudget(steps=budget.steps, method=ref[0], method_params=ref[1].model_dump(mode="json"),
                                      counts=budget.counts)
        for tseed in suite.teacher_seeds:
            for (mentry, mcls, mparams) in methods:
                try:
                    checkpoints = tuple(sorted(set(mcls().checkpoints(mparams, trecipe))))
                except ValueError as exc:
                    i = next(i for i, e in enumerate(suite.methods) if e is mentry)
                    raise UserError(f"{path}: methods[{i}].params: {exc}") from exc
                for seed in suite.seeds:
                    run = Run(run_id="", suite=suite.name, task=entry.name, task_label=entry.label or entry.name,
                              task_version=str(tcls.version), task_params=tparams.model_dump(mode="json"),
                              teacher_seed=tseed, teacher_recipe=trecipe, teacher_checkpoint=checkpoint,
                              checkpoints=checkpoints, student_recipe=srecipe, method=mentry.name,
                              method_label=mentry.label or mentry.name, method_version=str(mcls.version),
                              method_params=mparams.model_dump(mode="json"), seed=seed, budget=resolved,
                              eval=suite.eval, streams=STREAMS_VERSION, inputs=inputs,
                              save_every_s=suite.save_every_s, keep_students=suite.keep_students)
                    runs.append(replace(run, run_id=run_identity(run)))
    return runs


def check_plugin_file(file, where: str) -> None:
    """A UserError unless ``file`` is an existing Python (.py) file: ``where`` names who gave it."""
    file = Path(file)
    if not file.is_file():
        raise UserError(f"{where}: no such plugin file {excerpt(str(file))}")
    if file.suffix != ".py":
        raise UserError(f"{where}: {excerpt(str(file))} is not a Python file; a plugin file ends in .py")


def load_suite(path: Path, registry_factory, extra_plugins: tuple = ()) -> tuple[LoadedSuite, Registry]:
    """Parse ``path``, load plugins (built-ins, entry points, the suite's ``plugins:``
    and ``extra_plugins``), and expand into runs. Raises UserError on any bad input."""
    path = Path(path)
    suite = parse_suite(path)
    plugin_paths = [str((path.parent / p).resolve()) if not Path(p).is_absolute() else p for p in suite.plugins]
    for i, p in enumerate(plugin_paths):
        check_plugin_file(p, f"{path}: plugins[{i}]")
    for p in extra_plugins:
        check_plugin_file(p, "--plugin")
    registry = registry_factory(tuple(extra_plugins) + tuple(plugin_paths))
    failed = [p for p in plugin_paths + list(extra_plugins) if str(p) in registry.failures]
    if failed:
        raise UserError(f"{path}: plugins: {failed[0]} failed to load: {registry.failures[str(failed[0])]}")
    if suite.launcher.name not in registry.launchers:
        raise unknown_name(path, "launcher.name", "launcher", suite.launcher.name, list(registry.launchers),
                           registry.failure_lines())
    _validate_params(path, "launcher.options", registry.launchers[suite.launcher.name].cls.Params,
                     suite.launcher.options)
    runs = expand(suite, path, registry)
    tune = resolve_tune(suite, path, registry, runs)
    return LoadedSuite(suite, path, runs, tuple(extra_plugins) + tuple(plugin_paths), tune), registry
