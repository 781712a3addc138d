"""Leaderboards as numbers: a results folder's runs aggregated per task and method.

Input is a :class:`kdbench.results.Results` (one row per run folder); output is a
:class:`Leaderboard`: per task a :class:`Board` with a row per method (pandas
aggregation over seeds), the teachers, the runs that did not finish, the paired
comparison against a baseline method, and what the folder holds besides (runs of
other suites, unreadable folders). :mod:`kdbench.results.render` writes it as markdown,
LaTeX, CSV or JSON.

A row never merges runs whose configs differ other than by seed and teacher seed:
the results layer gives such runs distinct row labels (``one-shot [cfg 3f2a1c]``),
and the board notes which params differ.

Adding a column for another number of a run's summary.json (say ``total_flops``)
is its key in :data:`RUN_MEANS` (averaged over finished seeds), a column of
:meth:`Results.runs`, and one ``Column`` in :func:`kdbench.results.render.columns`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from kdbench.errors import UserError
from kdbench.results.claims import ClaimsReport
from kdbench.results.intervals import interval
from kdbench.run.fidelity import METRICS
from kdbench.suite.identity import SEEDS, config_identity
from kdbench.tuning.report import TaskTuning, task_tuning

DEFAULT_BASELINE = "one-shot"
# per-run numbers averaged over a method's finished seeds
RUN_MEANS = ("flops", "total_flops", "steps", "wall_time", "auc")
# fidelity to the final teacher (summary metrics of runs that measured it): mean and std over finished runs;
# name -> higher is better
FIDELITY = METRICS


def _mean_std(values: pd.Series) -> tuple[float, float]:
    values = values.dropna().astype(float)
    if values.empty:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


def _teacher_spread(done: pd.DataFrame) -> dict:
    """Over finished runs: how many teacher seeds have one, and the std (ddof 1) of the per-teacher means."""
    per = done.dropna(subset=["value"]).groupby("teacher_seed").value.mean()
    return {"teachers": len(per), "teacher_std": float(per.std(ddof=1)) if len(per) > 1 else math.nan}


def _fidelity(done: pd.DataFrame) -> dict:
    """Mean and std of each :data:`FIDELITY` number over the finished runs that have it."""
    out = {}
    for col in FIDELITY:
        out[col], out[f"{col}_std"] = _mean_std(done[col]) if col in done else (math.nan, math.nan)
    return out


def method_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Aggregate one task's runs per method (row label): metric mean/std over finished
    (teacher seed, seed) runs and its 95% interval (:func:`kdbench.results.intervals.interval`:
    Student-t over seeds with one teacher seed, over per-teacher means with several; ``ci_method``
    says which),
    teacher seeds with a finished run and the std of their means, FLOPs to target over the seeds
    that reached it, means of :data:`RUN_MEANS`, mean/std of :data:`FIDELITY`, checkpoints stored,
    students kept (count and bytes, summed over runs), and counts of runs by status. Best first."""
    hib = bool(runs.higher_is_better.iloc[0])
    rows = []
    for method, g in runs.groupby("method", sort=False):
        done = g[g.status == "finished"]
        mean, std = _mean_std(done.value)
        low, high, how = interval(done.value, done.teacher_seed)
        row = {
            "method": method, "version": ", ".join(sorted(set(g.version))), "runs": len(g),
            "n": int(done.value.notna().sum()),
            "statuses": {st: int(k) for st, k in g.status.value_counts().items() if st != "finished"},
            "mean": mean, "std": std, "ci_low": low, "ci_high": high, "ci_method": how, **_teacher_spread(done),
            "to_target": float(g.to_target.mean()) if g.to_target.notna().any() else math.nan,
            "reached": int(g.to_target.notna().sum()),
            "checkpoints": float(g.checkpoints.max()) if g.checkpoints.notna().any() else 0.0,
            "checkpoint_bytes": float(g.checkpoint_bytes.max()) if g.checkpoint_bytes.notna().any() else 0.0,
            "students": int((g.student_bytes > 0).sum()), "student_bytes": float(g.student_bytes.sum()),
        }
        for col in RUN_MEANS:
            row[col] = float(done[col].mean()) if col in done and done[col].notna().any() else math.nan
        rows.append({**row, **_fidelity(done)})
    frame = pd.DataFrame(rows)
    sign = 1 if hib else -1  # best first: final metric, then AUC; methods without a finished seed last
    keys = {"_key": (sign * frame["mean"]).fillna(-math.inf), "_auc": (sign * frame["auc"]).fillna(-math.inf)}
    return frame.assign(**keys).sort_values(["_key", "_auc"], ascending=False, kind="stable") \
        .drop(columns=list(keys)).reset_index(drop=True)


def paired(runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each method against ``baseline`` over matching (teacher seed, seed) pairs where
    both finished: mean and std of the difference in the final metric and in AUC, the
    number of pairs, in how many pairs the method is better (the metric's direction),
    the difference's 95% interval (as the mean's, see :func:`method_frame`), and on how
    many of the teacher seeds with a pair (``teachers_paired``) the mean difference is
    better (``teachers_better``)."""
    hib = bool(runs.higher_is_better.iloc[0])
    done = runs[runs.status == "finished"]
    columns = ["method", "delta", "delta_std", "pairs", "better", "tied", "delta_auc", "delta_ci_low",
               "delta_ci_high", "delta_ci_method", "teachers_better", "teachers_paired"]
    wide = {v: done.groupby(["teacher_seed", "seed", "method"])[v].first().unstack("method") for v in ("value", "auc")}
    if baseline not in wide["value"]:
        return pd.DataFrame(columns=columns)
    rows = []
    for method in wide["value"].columns:
        if method == baseline:
            continue
        d = (wide["value"][method] - wide["value"][baseline]).dropna()
        mean, std = _mean_std(d)
        ts = d.index.get_level_values("teacher_seed")
        per_teacher = d.groupby(ts).mean()
        low, high, how = interval(d, ts)
        rows.append({"method": method, "delta": mean, "delta_std": std, "pairs": len(d),
                     "better": int((d > 0).sum() if hib else (d < 0).sum()), "tied": int((d == 0).sum()),
                     "delta_auc": _mean_std(wide["auc"][method] - wide["auc"][baseline])[0],
                     "delta_ci_low": low, "delta_ci_high": high, "delta_ci_method": how,
                     "teachers_better": int((per_teacher > 0).sum() if hib else (per_teacher < 0).sum()),
                     "teachers_paired": len(per_teacher)})
    return pd.DataFrame(rows, columns=columns)


def per_teacher(runs: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """One task's final metric per method and teacher seed, over finished runs, in long form:
    ``method`` (in the order of ``methods``), ``teacher_seed`` (every teacher seed of the runs),
    ``mean``, ``std`` (ddof 1, NaN for one seed) and ``n`` (finished student seeds, 0 for none)."""
    done = runs[(runs.status == "finished") & runs.value.notna()]
    groups = dict(list(done.groupby(["method", "teacher_seed"])))
    rows = []
    for m in methods:
        for t in sorted(set(runs.teacher_seed)):
            values = groups[(m, t)].value if (m, t) in groups else pd.Series(dtype=float)
            rows.append({"method": m, "teacher_seed": t, **dict(zip(("mean", "std"), _mean_std(values))),
                         "n": len(values)})
    return pd.DataFrame(rows, columns=["method", "teacher_seed", "mean", "std", "n"])


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict) and obj:
        return {k: v for key, val in obj.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}
    return {prefix[:-1]: obj}


def differing_params(configs: dict[str, dict]) -> dict[str, dict[str, str]]:
    """For configs by row label: the dotted config fields whose values differ between
    them (seeds and bookkeeping aside), each value as JSON text (``-`` where absent)."""
    flat = {row: _flatten({k: v for k, v in config_identity(c).items() if k not in SEEDS})
            for row, c in configs.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    differ = [k for k in keys if len({json.dumps(f.get(k, "-"), sort_keys=True) for f in flat.values()}) > 1]
    return {row: {k: json.dumps(f[k]) if k in f else "-" for k in differ} for row, f in flat.items()}


@dataclass
class Board:
    """One task's leaderboard: a row per method plus what goes around the table.

    ``configs`` holds, per method label with several configs in this task, the params
    that differ by row label (see :func:`differing_params`)."""

    task: str
    metric: str
    higher_is_better: bool
    target: Optional[float]
    budget: Optional[float]
    budget_spec: Optional[dict]
    methods: pd.DataFrame
    teachers: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    baseline: Optional[str] = None
    ci: bool = False
    budgets: list[float] = field(default_factory=list)
    configs: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    tuning: Optional[TaskTuning] = None  # the task's tuning sweeps (a suite with a tune: block)
    teacher_seeds: list[int] = field(default_factory=list)  # of the task's runs, whatever their status
    per_teacher: Optional[pd.DataFrame] = None  # see per_teacher()
    fidelity: list[str] = field(default_factory=list)  # the FIDELITY numbers some run of the task has
    # per row whose finished runs come from several versions of plugin code: {code fingerprints: runs}
    code_mixed: dict[str, dict[str, int]] = field(default_factory=dict)
    # per row whose phases generate sequences: what they generate (the phases' info["generates"])
    generation: dict[str, str] = field(default_factory=dict)
    # when some run of the task read the teacher's top-k logit cache: {"top_k": [K...], "saved_flops": total}
    logit_cache: Optional[dict] = None


@dataclass
class Leaderboard:
    """Every task's :class:`Board`, and what the folder holds that is not in them: run
    folders outside the suite shown (``outside``), the suite's runs with no folder yet
    (``not_started``) and the run folders that could not be read (``unreadable``)."""

    boards: list[Board]
    path: str
    suite: Optional[str] = None
    all_runs: bool = True
    outside: int = 0
    not_started: int = 0
    unreadable: list[dict] = field(default_factory=list)
    manifest_problem: Optional[str] = None
    tuning_runs: int = 0
    claims: Optional[ClaimsReport] = None  # the suite's claims judged on its runs
    teacher_problems: dict[str, str] = field(default_factory=dict)  # teacher id: which records do not verify

    def frame(self) -> pd.DataFrame:
        """One row per (task, method): the task's metric, direction, target and budget, then
        the method's aggregated numbers (as in :func:`method_frame` plus the paired deltas)."""
        parts = [b.methods.assign(task=b.task, metric=b.metric, higher_is_better=b.higher_is_better,
                                  target=b.target, budget_flops=b.budget, baseline=b.baseline) for b in self.boards]
        if not parts:
            return pd.DataFrame(columns=["task", "method"])
        frame = pd.concat(parts, ignore_index=True)
        first = ["task", "method", "metric", "higher_is_better", "target", "budget_flops", "baseline"]
        return frame[first + [c for c in frame.columns if c not in first]]


def _problems(g: pd.DataFrame) -> list[dict]:
    return [{"run_id": r.run_id, "method": r.method, "seed": r.seed, "teacher_seed": r.teacher_seed,
             "status": r.status, "error": r.error,
             "diverged_at": None if r.diverged_at is None or r.diverged_at != r.diverged_at else int(r.diverged_at)}
            for r in g.itertuples() if r.status != "finished"]


def _configs(g: pd.DataFrame) -> dict[str, dict[str, dict[str, str]]]:
    """Per method label with several configs in this task: the params that differ, by row label."""
    out = {}
    for label, rows in g.groupby("method_label", sort=False):
        configs = rows.drop_duplicates("config_key")
        if len(configs) > 1:
            out[label] = differing_params(dict(zip(configs.method, configs.config)))
    return out


def _code_mixed(g: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per row label whose finished runs record more than one version of their plugin code (runs whose
    code is unknown, recorded before fingerprints, left out): how many runs each version produced."""
    known = g[(g.status == "finished") & g.code.notna()] if "code" in g else g.iloc[:0]
    counts = {label: rows.code.value_counts().sort_index() for label, rows in known.groupby("method", sort=False)}
    return {label: {str(k): int(v) for k, v in c.items()} for label, c in counts.items() if len(c) > 1}


def _generation(g: pd.DataFrame) -> dict[str, str]:
    """Per method label whose phases generate sequences (a phase's ``info["generates"]``), what they generate."""
    out = {}
    for label, rows in g.groupby("method", sort=False):
        said = [ph["info"]["generates"] for phases in rows.phases for ph in phases
                if isinstance(ph.get("info"), dict) and ph["info"].get("generates")]
        if said:
            out[label] = "; ".join(dict.fromkeys(str(s) for s in said))
    return out


def _logit_cache(g: pd.DataFrame, frame: pd.DataFrame) -> Optional[dict]:
    """The task's top-k teacher-logit cache, when some of its runs read one: the k values and the teacher
    FLOPs its hits saved over all runs; ``frame`` gets each row's mean saved FLOPs per run (``saved_flops``)."""
    if "logit_top_k" not in g or not g.logit_top_k.notna().any():
        return None
    saved = g.saved_flops.fillna(0.0)
    frame["saved_flops"] = [float(saved[g.method == m].mean()) for m in frame.method]
    return {"top_k": sorted(int(k) for k in g.logit_top_k.dropna().unique()),
            "approximation": "tail mass spread evenly over the other tokens", "saved_flops": float(saved.sum())}


def build_leaderboard(results, baseline: Optional[str] = None, ci: bool = False) -> Leaderboard:
    """The :class:`Leaderboard` of ``results``. ``baseline`` (default one-shot) names the row
    the others are compared with; naming one that no task has is a UserError."""
    runs = results.runs()
    suite = (results.suite or {}).get("suite")
    board = Leaderboard([], str(results.path), suite, results.all_runs, results.outside, len(results.not_started),
                        results.unreadable().to_dict("records"), results.manifest_problem, results.tuning_runs)
    board.claims = results.claims()
    problems = results.teachers().dropna(subset=["problem"])
    board.teacher_problems = dict(zip(problems.teacher_id, problems.problem))
    if runs.empty:
        return board
    if baseline is not None and baseline not in set(runs.method):
        raise UserError(f"--baseline: no runs of method {baseline!r} in {results.path}; "
                        f"allowed: {', '.join(sorted(set(runs.method)))}")
    base = baseline or DEFAULT_BASELINE
    teacher_rows = results.teachers()
    teachers = {t: summary for t, summary in zip(teacher_rows.teacher_id, teacher_rows.summary) if summary}
    trials = results.tuning()
    for task in results.order("tasks", list(dict.fromkeys(runs.task))):
        g = runs[runs.task == task]
        frame = method_frame(g)
        tuning = task_tuning(trials, task)
        if tuning is not None:  # what choosing each method's settings cost, beside its test runs
            frame["tuned"] = [m in tuning.flops for m in frame.method]
            frame["tuning_flops"] = [tuning.flops.get(m, math.nan) for m in frame.method]
        logit_cache = _logit_cache(g, frame)
        has_base = base in set(g.method)
        if has_base:
            frame = frame.merge(paired(g, base), on="method", how="left")
            counts = ["pairs", "better", "tied", "teachers_better", "teachers_paired"]
            frame[counts] = frame[counts].astype("Int64")
        targets, budgets = g.target.dropna().unique(), g.budget.dropna().unique()
        tids = [t for t in dict.fromkeys(g.teacher_id) if isinstance(t, str)]
        board.boards.append(Board(
            task=task, metric=g.metric.iloc[0], higher_is_better=bool(g.higher_is_better.iloc[0]),
            target=float(targets[0]) if len(targets) else None, budget=float(budgets[0]) if len(budgets) else None,
            budget_spec=next((b for b in g.budget_spec if isinstance(b, dict)), None), methods=frame,
            teachers=[{"teacher_id": t, **teachers[t]} for t in tids if t in teachers],
            problems=_problems(g), baseline=base if has_base else None, ci=ci,
            budgets=[float(b) for b in budgets], configs=_configs(g), tuning=tuning,
            teacher_seeds=sorted({int(t) for t in g.teacher_seed}), per_teacher=per_teacher(g, list(frame.method)),
            fidelity=[c for c in FIDELITY if c in g and g[c].notna().any()], code_mixed=_code_mixed(g),
            generation=_generation(g), logit_cache=logit_cache))
    return board
