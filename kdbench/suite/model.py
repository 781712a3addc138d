"""The suite file's fields as pydantic models: what a suite may say, with its defaults and bounds.

Reading a file into these models is :mod:`kdbench.suite.file` and
:func:`kdbench.suite.expand.parse_suite`; checking them against the loaded
plugins and turning them into runs is :mod:`kdbench.suite.expand`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kdbench.loggers.schema import LoggerEntry

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


class TeacherLogits(_Strict):
    """``tasks[i].teacher_logits``: read the final teacher's outputs from a cache of its top-k
    log-probabilities per position (:mod:`kdbench.run.logit_cache`) instead of running it at every step.
    The rest of each distribution is one tail bucket spread evenly over the other tokens."""

    top_k: int = Field(ge=1, description="log-probabilities kept per position (the rest: one tail bucket)")

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data):
        if not isinstance(data, dict):
            raise ValueError("give {top_k: K} with an integer K >= 1 (or leave teacher_logits out: no cache)")
        return data


class TaskEntry(_Strict):
    name: str
    label: Optional[str] = Field(None, pattern=NAME_PATTERN, max_length=NAME_MAX)
    params: dict[str, Any] = {}
    teacher: dict[str, Any] = Field({}, description="overrides of the task's teacher recipe")
    student: dict[str, Any] = Field({}, description="overrides of the task's student recipe")
    budget: Optional[Budget] = None
    teacher_checkpoint: Optional[str] = Field(None, description="use this state dict as the final teacher")
    teacher_logits: Optional[TeacherLogits] = Field(
        None, description="opt-in cache of the final teacher's top-k log-probabilities ({top_k: K}); default: none")


class MethodEntry(_Strict):
    name: str
    label: Optional[str] = Field(None, pattern=NAME_PATTERN, max_length=NAME_MAX)
    params: dict[str, Any] = {}


class LauncherEntry(_Strict):
    """Which launcher executes the suite's runs, and its options (validated by its ``Params``)."""

    name: str = "local"
    options: dict[str, Any] = {}


class ResolvedBudget(_Strict):
    """A run's budget as expansion resolved it: raw ``flops``, or ``steps`` of ``method``
    (with that method entry's resolved ``method_params``, and ``priced_flops``, what those steps
    cost), or ``student_steps``; and what it ``counts``."""

    flops: Optional[float] = None
    steps: Optional[int] = None
    method: Optional[str] = None
    method_params: Optional[Any] = None  # the method's validated Params (a dict as config.json reads)
    student_steps: Optional[int] = None
    counts: Literal["student", "total"] = "student"
    priced_flops: Optional[float] = Field(None, description="steps of method: the FLOPs they come to, measured "
                                          "when the suite was loaded; a run's identity holds them")

    @property
    def counts_total(self) -> bool:
        return self.counts == "total"


class TuneSpec(BaseModel):
    """The ``tune:`` block of a suite (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    trials: int = Field(ge=1, description="trials per tuned method (the same for every one)")
    dev_seeds: list[int] = Field(min_length=1, description="student seeds the settings are chosen on")
    dev_teacher_seeds: Optional[list[int]] = Field(
        None, min_length=1, description="teacher seeds the trials distil from (default: the suite's first teacher "
        "seed + 100); never the suite's teacher_seeds")
    objective: Literal["final", "auc", "flops_to_target"] = Field(
        "final", description="what a trial scores: the final metric, its AUC, or FLOPs to eval.target")
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="Optuna sampler")
    seed: int = Field(0, ge=0, description="seed of the samplers")
    space: dict[str, dict[str, Any]] = Field(min_length=1, description="per method label (or *): param -> "
                                             "range {low, high, log, step} or list of choices")

    @field_validator("dev_seeds", "dev_teacher_seeds")
    @classmethod
    def _seeds(cls, v, info):
        if v is not None and (len(set(v)) != len(v) or min(v) < 0):
            raise ValueError(f"{info.field_name.replace('_', ' ')} must be distinct and >= 0, got {v}")
        return v


class Range(BaseModel):
    """A numeric range of a search space."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = False
    step: Optional[float] = Field(None, gt=0)


class Claim(_Strict):
    """A claim the suite tests (``claims:``): method ``better`` beats method ``than`` on ``metric``, paired
    over student seeds, on at least ``holds_on`` of the suite's teacher seeds (:mod:`kdbench.suite.claims`)."""

    name: str = Field(min_length=1, max_length=NAME_MAX, description="what the claim says, unique in the suite")
    better: str = Field(description="the method label that should win")
    than: str = Field(description="the method label it should beat")
    metric: Optional[str] = Field(None, description="metric (the task's ranking metric, the default), its name, "
                                  "auc, flops_to_target, agreement or teacher_kl")
    holds_on: float = Field(1.0, gt=0, le=1, description="the fraction of teacher seeds on which it must hold")
    task: Optional[str] = Field(None, description="a task label (default: every task of the suite)")
    min_seeds: int = Field(2, ge=1, description="paired student seeds needed to judge it at a teacher seed")
    margin: float = Field(0.0, ge=0, description="how much better the mean paired difference must be at a teacher "
                                                 "seed (in the metric's units; default 0: any amount)")


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
    claims: list[Claim] = Field([], description="claims the results are checked against (kdbench check)")

    @field_validator("seeds", "teacher_seeds")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v
