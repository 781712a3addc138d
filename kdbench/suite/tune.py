"""A suite's ``tune:`` block: the schema, its validation against the plugins, and settings -> runs.

::

    tune:
      trials: 16                 # per tuned method: the same number for every one
      dev_seeds: [100, 101]      # settings are chosen on these seeds only (never on `seeds`)
      dev_teacher_seeds: [100]   # ... distilling from these teachers only (never `teacher_seeds`)
      objective: auc             # final | auc | flops_to_target (the suite's eval.target)
      sampler: tpe               # tpe | random | grid
      seed: 0                    # seeds the samplers: the same suite gives the same sweep
      space:
        progressive: {multiplier: {low: 1.5, high: 8, log: true}, every: [250, 500, 1000]}
        "*": {student.lr: {low: 3.0e-4, high: 1.0e-2, log: true}}   # every method

Space keys are method labels (entries of ``methods:``) or ``"*"`` (every method, under
each method's own entries). A param is a method param or ``student.<field>`` of the
student recipe; its values are a range ``{low, high, log, step}`` (int or float, from
the param's type) or a list of choices. Every value must be valid with the method's
other params as the suite gives them (each endpoint and choice is validated through
the plugin's params model, and the teacher checkpoints it reads are checked). A
method with no entry (and no ``"*"``) is not tuned.

A trial runs on every dev seed x dev teacher seed, the test runs on ``seeds`` x
``teacher_seeds``: settings are chosen neither on the students nor on the teachers
that are reported. ``dev_teacher_seeds`` defaults to ``[the suite's first teacher
seed + 100]`` (``[100]`` for the default ``teacher_seeds: [0]``), resolved once by
:func:`resolve_tune` into :attr:`TunePlan.spec`; a dev teacher seed that is also one of
``teacher_seeds`` is refused, like a dev seed that is one of ``seeds``.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import ValidationError

from kdbench.api import Recipe
from kdbench.errors import UserError
from kdbench.suite.identity import Run, plain, run_identity
from kdbench.suite.model import Range, TuneSpec
from kdbench.suite.schema import format_validation_error, members, params_of, type_text, unknown_name, validate_strictly

STUDENT = "student."
# student recipe fields a sweep may search: not the teacher's length or checkpoint cadence
STUDENT_FIELDS = tuple(f for f in Recipe.model_fields if f not in ("steps", "checkpoint_every"))
EVERY = "*"


@dataclass(frozen=True)
class Dimension:
    """One searched param: ``kind`` float or int (``low``..``high``, ``log``, ``step``) or choice."""

    name: str  # a method param, or student.<recipe field>
    kind: Literal["float", "int", "choice"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: Optional[float] = None
    choices: tuple = ()

    def spec(self) -> dict:
        """The dimension as JSON data (for the sweep's records)."""
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log, "step": self.step}

    def grid(self) -> list:
        """Every value of a choice or stepped range (what the grid sampler walks)."""
        if self.kind == "choice":
            return list(self.choices)
        n = int(round((self.high - self.low) / self.step))
        values = [self.low + i * self.step for i in range(n + 1)]
        return [int(round(v)) for v in values] if self.kind == "int" else values


DEV_TEACHER_OFFSET = 100  # the default dev teacher seed: the suite's first teacher seed + this


@dataclass(frozen=True)
class TunePlan:
    """A validated ``tune:`` block: the spec (``dev_teacher_seeds`` resolved), and each tuned method
    label's dimensions by name."""

    spec: TuneSpec
    spaces: dict[str, dict[str, Dimension]]

    @property
    def runs_per_trial(self) -> int:
        """The runs of one trial: every dev seed x dev teacher seed."""
        return len(self.spec.dev_seeds) * len(self.spec.dev_teacher_seeds)

    def dev_templates(self, run: Run) -> dict[int, Run]:
        """Per dev teacher seed, ``run`` (a run of a tuned method) distilling from that teacher: what a
        trial's settings go on top of."""
        return {seed: on_teacher_seed(run, seed) for seed in self.spec.dev_teacher_seeds}


def on_teacher_seed(run: Run, teacher_seed: int) -> Run:
    """``run`` with another teacher seed, and the run id and teacher id that go with it."""
    moved = replace(run, teacher_seed=teacher_seed, run_id="")
    return replace(moved, run_id=run_identity(moved))


def split_settings(values: dict[str, Any]) -> tuple[dict, dict]:
    """Trial settings as (method params, student recipe fields)."""
    method = {k: v for k, v in values.items() if not k.startswith(STUDENT)}
    student = {k[len(STUDENT):]: v for k, v in values.items() if k.startswith(STUDENT)}
    return method, student


def apply_settings(template, values: dict[str, Any], seed: int, registry):
    """The run ``template`` (a :class:`kdbench.suite.Run`) with ``values`` (method params and
    ``student.<field>``) on top of its params, for student seed ``seed``, with its own run id.
    Raises ValidationError or ValueError when the settings do not make a valid run."""
    cls = registry.methods[template.method].cls
    method, student = split_settings(values)
    params = cls.Params.model_validate({**plain(template.method_params), **method})
    recipe = Recipe.model_validate({**template.student_recipe.model_dump(), **student})
    checkpoints = tuple(sorted(set(cls().checkpoints(params, template.teacher_recipe))))
    run = replace(template, seed=seed, method_params=params, student_recipe=recipe,
                  checkpoints=checkpoints, run_id="")
    return replace(run, run_id=run_identity(run))


# ---------------------------------------------------------------- validation

def resolve_tune(suite, path: Path, registry, runs: list) -> Optional[TunePlan]:
    """Check ``suite.tune`` against the suite, its methods' params models and the student recipe;
    return its :class:`TunePlan` (None without a ``tune:`` block). ``runs`` are the suite's
    expanded runs: each method's params and recipes as the suite gives them."""
    spec = suite.tune
    if spec is None:
        return None
    overlap = sorted(set(spec.dev_seeds) & set(suite.seeds))
    if overlap:
        raise UserError(f"{path}: tune.dev_seeds: {overlap} are also test seeds (seeds: {suite.seeds}); settings "
                        "must be chosen on seeds that are never reported: use dev seeds outside seeds")
    spec = _with_dev_teachers(spec, suite.teacher_seeds, path)
    if spec.objective == "flops_to_target" and suite.eval.target is None:
        raise UserError(f"{path}: tune.objective: flops_to_target needs eval.target (the metric value to reach); "
                        "allowed without it: final, auc")
    labels = [e.label or e.name for e in suite.methods]
    for key in spec.space:
        if key != EVERY and key not in labels:
            raise unknown_name(path, f"tune.space.{key}", "method label", key, labels + [EVERY])
    spaces = {}
    for label in labels:
        if label not in spec.space and EVERY not in spec.space:
            continue
        template = next(r for r in runs if r.method_label == label)
        own = {k: (label, v) for k, v in spec.space.get(label, {}).items()}
        entries = {**own, **{k: (EVERY, v) for k, v in spec.space.get(EVERY, {}).items() if k not in own}}
        if not entries:
            raise UserError(f"{path}: tune.space.{label}: no param to search; name one or remove the entry")
        checker = _Checker(path, template, registry, spec, runs)
        spaces[label] = {name: checker.dimension(key, name, raw) for name, (key, raw) in entries.items()}
    if spec.sampler == "grid":
        for label, dims in spaces.items():
            size = math.prod(len(d.grid()) for d in dims.values())
            if spec.trials > size:
                raise UserError(f"{path}: tune.trials: {spec.trials} trials, but the grid of {label} has {size} "
                                f"point(s); allowed: 1..{size}")
    return TunePlan(spec, spaces)


def _with_dev_teachers(spec: TuneSpec, teacher_seeds: list[int], path: Path) -> TuneSpec:
    """``spec`` with ``dev_teacher_seeds`` resolved (default: the first teacher seed + 100); a UserError
    when one of them is also a test teacher seed."""
    given = spec.dev_teacher_seeds is not None
    seeds = spec.dev_teacher_seeds if given else [teacher_seeds[0] + DEV_TEACHER_OFFSET]
    overlap = sorted(set(seeds) & set(teacher_seeds))
    if overlap:
        default = "" if given else f" (the default: the first teacher seed + {DEV_TEACHER_OFFSET})"
        raise UserError(f"{path}: tune.dev_teacher_seeds: {overlap}{default} are also test teacher seeds "
                        f"(teacher_seeds: {teacher_seeds}); settings must be chosen on teachers whose runs are never "
                        "reported: use dev teacher seeds outside teacher_seeds")
    return spec.model_copy(update={"dev_teacher_seeds": list(seeds)})


class _Checker:
    """Validates the space entries of one method against its params model and the student recipe."""

    def __init__(self, path: Path, template, registry, spec: TuneSpec, runs: list):
        self.path, self.template, self.spec, self.registry = path, template, spec, registry
        self.cls = registry.methods[template.method].cls
        self.budget_in_steps = any(r.budget.steps is not None for r in runs)

    def _field(self, where: str, name: str):
        """(the model that validates ``name``, its field name, its field)."""
        model, field = (Recipe, name[len(STUDENT):]) if name.startswith(STUDENT) else (self.cls.Params, name)
        allowed = [f for f in self.cls.Params.model_fields] + [STUDENT + f for f in STUDENT_FIELDS]
        if name not in allowed:
            hint = difflib.get_close_matches(name, allowed, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise UserError(f"{self.path}: {where}: unknown param {name!r} of {self.template.method_label}"
                            f"{suggestion}; allowed: {', '.join(allowed)}")
        return model, field, model.model_fields[field]

    def _allowed(self, model, field: str) -> str:
        info = next(p for p in params_of(model) if p.name == field)
        return f"; allowed: {info.allowed}" if info.allowed else f" ({info.type})"

    def _check(self, where: str, name: str, value) -> None:
        """Raise if the method's params (or the student recipe) with ``name: value`` are not valid."""
        model, field, _ = self._field(where, name)
        try:
            apply_settings(self.template, {name: value}, self.template.seed, self.registry)
        except ValidationError as err:
            e = err.errors()[0]
            msg = e["msg"].removeprefix("Value error, ")
            if not e["loc"]:  # the model's own check: the value clashes with another param
                raise UserError(f"{self.path}: {where}: {json.dumps(value)} is not allowed with the other params "
                                f"of {self.template.method_label} as the suite gives them: {msg}") from err
            loc = ".".join(str(p) for p in e["loc"])
            raise UserError(f"{self.path}: {where}: {json.dumps(value)} is not allowed"
                            f"{f' ({loc})' if loc != field else ''}: {msg}{self._allowed(model, field)}") from err
        except ValueError as exc:
            raise UserError(f"{self.path}: {where}: {json.dumps(value)} is not allowed: {exc}") from exc

    def dimension(self, key: str, name: str, raw) -> Dimension:
        where = f"tune.space.{key}.{name}" + (f" (for {self.template.method_label})" if key == EVERY else "")
        model, field, info = self._field(where, name)
        if name == STUDENT + "batch_size" and self.budget_in_steps:
            raise UserError(f"{self.path}: {where}: the budget is given in steps, whose FLOPs depend on the batch "
                            "size, so searching it would give methods different budgets; give the budget in flops")
        if isinstance(raw, list):
            return self._choices(where, name, raw)
        if not isinstance(raw, dict):
            raise UserError(f"{self.path}: {where}: give a range {{low, high, log, step}} or a list of choices, "
                            f"not {json.dumps(raw)}")
        numeric = [m for m in members(info.annotation) if m in (int, float)]
        if not numeric:
            raise UserError(f"{self.path}: {where}: a range needs a number param; {name} takes "
                            f"{type_text(info.annotation)}{self._allowed(model, field)}: give a list of choices")
        try:
            rng = validate_strictly(Range, raw)
        except ValidationError as err:
            raise UserError(format_validation_error(self.path, err, where, Range)) from err
        kind = "int" if numeric == [int] else "float"
        self._check_range(where, rng, kind)
        for value in (rng.low, rng.high):
            self._check(where, name, int(value) if kind == "int" else value)
        return Dimension(name, kind, rng.low, rng.high, rng.log, rng.step)

    def _check_range(self, where: str, rng: Range, kind: str) -> None:
        fail = lambda why: UserError(f"{self.path}: {where}: {why}")  # noqa: E731
        if rng.low >= rng.high:
            raise fail(f"low ({rng.low:g}) must be below high ({rng.high:g})")
        if kind == "int" and not all(float(v).is_integer() for v in (rng.low, rng.high, rng.step or 1)):
            raise fail("an int param needs whole numbers for low, high and step")
        if rng.log and rng.low <= 0:
            raise fail(f"log: true needs low > 0 (got {rng.low:g})")
        if rng.log and rng.step is not None:
            raise fail("log and step cannot be combined: give one")
        if rng.step is not None:
            n = (rng.high - rng.low) / rng.step
            if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
                raise fail(f"high - low ({rng.high - rng.low:g}) is not a multiple of step ({rng.step:g})")
        elif self.spec.sampler == "grid":
            raise fail("the grid sampler needs a step for every range (or a list of choices)")

    def _choices(self, where: str, name: str, values: list) -> Dimension:
        if not values:
            raise UserError(f"{self.path}: {where}: an empty list of choices")
        texts = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(texts)) != len(texts):
            raise UserError(f"{self.path}: {where}: a choice appears twice in {json.dumps(values)}")
        for value in values:
            self._check(where, name, value)
        return Dimension(name, "choice", choices=tuple(values))

