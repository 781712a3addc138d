"""A suite's claims (``claims:``, :mod:`kdbench.suite.claims`) judged on a results folder's runs.

Per claim, task and teacher seed of the suite: the paired differences ``better - than``
in the claim's metric over the student seeds where both runs finished (and have the
metric); the claim holds at that teacher seed when there are at least ``min_seeds``
pairs and their mean is better in the metric's direction by more than ``margin`` (default 0:
any amount; a margin keeps chance-level noise from counting as a win), does not hold when
there are and it is not, and there are not enough runs otherwise. Overall it holds on
X of the suite's Y teacher seeds: **holds** when X/Y >= ``holds_on``, **does not hold**
when it would fail even if every teacher seed without enough runs held, and **not
enough runs** in between.

For ``flops_to_target`` (lower is better) a finished run that never reached the target
counts as infinitely many FLOPs: a pair where neither reached it is a tie (difference 0),
one where only one did has an infinite difference, which decides the mean (pairs that
disagree that way give no mean, and the claim does not hold there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from pydantic import ValidationError

from kdbench import __version__
from kdbench.errors import UserError
from kdbench.suite.claims import TASK_METRIC, claim_tasks, higher_is_better, validate_claims
from kdbench.suite.model import Claim, Suite
from kdbench.suite.schema import format_validation_error

HOLDS, FAILS, SHORT = "holds", "does not hold", "not enough runs"
HEADERS = ("Claim", "Task", "Metric", "Teacher seed", "Δ better − than", "Pairs", "At this seed", "Overall")


def _number(x: float) -> Any:
    """``x`` as JSON: None for NaN, ``"inf"``/``"-inf"`` for infinities (as kdbench writes them)."""
    if math.isnan(x):
        return None
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


@dataclass(frozen=True)
class TeacherVerdict:
    """A claim at one teacher seed: the student ``seeds`` paired, each pair's ``differences``
    (better - than), their mean and std, and the ``status`` (holds, does not hold, not enough runs)."""

    teacher_seed: int
    seeds: list[int]
    differences: list[float]
    mean: float
    std: float
    status: str

    @property
    def pairs(self) -> int:
        """Student seeds paired at this teacher seed."""
        return len(self.seeds)

    def to_json(self) -> dict:
        """The verdict as JSON data (infinities as strings, NaN as null)."""
        return {"teacher_seed": self.teacher_seed, "status": self.status, "pairs": self.pairs,
                "mean": _number(self.mean), "std": _number(self.std), "seeds": self.seeds,
                "differences": [_number(d) for d in self.differences]}


@dataclass(frozen=True)
class ClaimVerdict:
    """A claim judged on one task: its fields, the resolved ``metric`` name and direction, and a
    :class:`TeacherVerdict` per teacher seed of the suite."""

    name: str
    task: str
    better: str
    than: str
    metric: str
    higher_is_better: bool
    holds_on: float
    min_seeds: int
    teachers: list[TeacherVerdict]
    margin: float = 0.0

    @property
    def held(self) -> int:
        """Teacher seeds on which it holds."""
        return sum(t.status == HOLDS for t in self.teachers)

    @property
    def verdict(self) -> str:
        """holds, does not hold, or not enough runs (see the module docstring)."""
        total, short = len(self.teachers), sum(t.status == SHORT for t in self.teachers)
        if self.held / total >= self.holds_on:
            return HOLDS
        return FAILS if (self.held + short) / total < self.holds_on else SHORT

    @property
    def student_seeds(self) -> str:
        """Paired student seeds per teacher seed: ``3``, or ``1-3`` when they differ."""
        counts = sorted({t.pairs for t in self.teachers})
        return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"

    def summary(self) -> str:
        """``holds on X of Y teacher seeds (Z student seeds each)``."""
        return f"holds on {self.held} of {len(self.teachers)} teacher seeds ({self.student_seeds} student seeds each)"

    def line(self) -> str:
        """The claim's verdict in one line: name, task, summary, verdict."""
        return f"{self.name} ({self.task}, {self.metric}): {self.summary()}: {self.verdict}"

    def to_json(self) -> dict:
        """The claim's verdict as JSON data."""
        return {"name": self.name, "task": self.task, "better": self.better, "than": self.than,
                "metric": self.metric, "higher_is_better": self.higher_is_better, "holds_on": self.holds_on,
                "min_seeds": self.min_seeds, "margin": self.margin, "held": self.held, "teacher_seeds": [t.teacher_seed for t in self.teachers],
                "student_seeds": self.student_seeds, "summary": self.summary(), "verdict": self.verdict,
                "teachers": [t.to_json() for t in self.teachers]}


@dataclass(frozen=True)
class ClaimsReport:
    """Every claim of a suite judged on its results: one :class:`ClaimVerdict` per claim and task
    (empty when the suite states none)."""

    suite: Optional[str]
    claims: list[ClaimVerdict]

    @property
    def failed(self) -> list[ClaimVerdict]:
        """The claims that do not hold."""
        return [c for c in self.claims if c.verdict == FAILS]

    def to_json(self) -> dict:
        """The report as JSON data (what ``claims.json`` and ``kdbench check --json`` hold)."""
        return {"kdbench_version": __version__, "suite": self.suite, "claims": [c.to_json() for c in self.claims]}


def _values(runs: pd.DataFrame, metric: str) -> pd.Series:
    """Each run's number for a claim's ``metric`` (resolved; finished runs only are passed)."""
    if metric == "auc":
        return runs.auc.astype(float)
    if metric == "flops_to_target":  # never reached: infinitely many FLOPs
        return runs.to_target.astype(float).fillna(math.inf)
    if metric == TASK_METRIC or (runs.metric == metric).all():
        return runs.value.astype(float)
    if metric in runs.columns:
        return pd.to_numeric(runs[metric], errors="coerce").astype(float)
    return runs.metrics.map(lambda m: m.get(metric) if isinstance(m, dict) else None).astype(float)


def _teacher(claim: Claim, runs: pd.DataFrame, metric: str, higher: bool, seed: int) -> TeacherVerdict:
    """``claim`` at teacher seed ``seed``, from the task's finished runs."""
    at = runs[runs.teacher_seed == seed]
    wide = at.assign(_v=_values(at, metric)).groupby(["seed", "method_label"])["_v"].first().unstack()
    if claim.better not in wide or claim.than not in wide:
        return TeacherVerdict(seed, [], [], math.nan, math.nan, SHORT)
    pairs = wide[[claim.better, claim.than]].dropna()
    b, t = pairs[claim.better].to_numpy(), pairs[claim.than].to_numpy()
    with np.errstate(invalid="ignore"):
        diff = np.where(b == t, 0.0, b - t)  # two runs that never reached a target tie
        mean = float(diff.mean()) if len(diff) else math.nan
        std = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
    if len(diff) < claim.min_seeds:
        status = SHORT
    else:
        status = HOLDS if (mean > claim.margin if higher else mean < -claim.margin) else FAILS
    return TeacherVerdict(seed, [int(s) for s in pairs.index], [float(d) for d in diff], mean, std, status)


def evaluate_claims(suite: Suite, runs: pd.DataFrame) -> list[ClaimVerdict]:
    """Every claim of ``suite`` judged on ``runs`` (:meth:`kdbench.results.Results.runs` rows),
    one :class:`ClaimVerdict` per claim and task, over the suite's seeds and teacher seeds."""
    if not runs.empty:
        runs = runs[(runs.status == "finished") & runs.seed.isin(suite.seeds)
                    & runs.teacher_seed.isin(suite.teacher_seeds)]
    out = []
    for claim in suite.claims:
        for task in claim_tasks(claim, suite):
            g = runs[runs.task == task] if not runs.empty else runs
            task_metric = str(g.metric.iloc[0]) if not g.empty else TASK_METRIC
            task_higher = bool(g.higher_is_better.iloc[0]) if not g.empty else True
            metric = task_metric if claim.metric in (None, TASK_METRIC) else claim.metric
            higher = higher_is_better(TASK_METRIC if metric == task_metric else metric, task_higher)
            teachers = [_teacher(claim, g, metric, higher, seed) if not g.empty
                        else TeacherVerdict(seed, [], [], math.nan, math.nan, SHORT) for seed in suite.teacher_seeds]
            out.append(ClaimVerdict(claim.name, task, claim.better, claim.than, metric, higher, claim.holds_on,
                                    claim.min_seeds, teachers, claim.margin))
    return out


def claims_report(suite_data: Optional[dict], runs: pd.DataFrame, where: Path) -> ClaimsReport:
    """The claims of ``suite_data`` (a results folder's ``suite.yaml``, read from ``where``) judged
    on ``runs``; empty when it states none. A claims block that is not valid is a UserError."""
    if not suite_data or not suite_data.get("claims"):
        return ClaimsReport(suite_data.get("name") if suite_data else None, [])
    try:
        suite = Suite.model_validate(suite_data)
    except ValidationError as err:
        raise UserError(format_validation_error(where, err, model=Suite)) from err
    validate_claims(suite, where)
    return ClaimsReport(suite.name, evaluate_claims(suite, runs))


# ---------------------------------------------------------------- as text


def _delta(c: ClaimVerdict, t: TeacherVerdict) -> str:
    if math.isnan(t.mean):
        return "-"
    fmt = "+.3g" if c.metric == "flops_to_target" else "+.4f"
    return f"{t.mean:{fmt}}" + ("" if math.isnan(t.std) else f" ± {t.std:{fmt[1:]}}")


def claim_rows(report: ClaimsReport) -> list[list[str]]:
    """The claims table's cells as plain text (columns: :data:`HEADERS`): a row per claim, task and
    teacher seed; the claim's name, task, metric and overall verdict on its first row only."""
    rows = []
    for c in report.claims:
        for i, t in enumerate(c.teachers):
            first = i == 0
            rows.append([c.name if first else "", c.task if first else "",
                         f"{c.metric} {'↑' if c.higher_is_better else '↓'}" if first else "",
                         str(t.teacher_seed), _delta(c, t), f"{t.pairs}/{c.min_seeds}", t.status,
                         f"{c.summary()}: {c.verdict}" if first else ""])
    return rows


# what the claims table's columns mean
CLAIMS_NOTE = ("Claims: Δ is the mean ± std over student seeds of the paired difference (better − than) where both "
               "finished, per teacher seed; Pairs: paired seeds / the claim's min_seeds; a claim holds at a teacher "
               "seed with enough pairs and a mean better by more than the claim's margin in the metric's direction "
               "(↑ higher, ↓ lower; "
               "flops_to_target counts a run that never reached the target as infinitely many FLOPs), and overall "
               "when it holds on at least its holds_on fraction of the suite's teacher seeds.")
