"""A tuning sweep's records in a results folder, and the numbers read from them.

::

    OUT/tuning/optuna.journal          Optuna's file-locked journal: one study per (task, method)
    OUT/tuning/<task>/<method>.json    the sweep of one method on one task, written after every round

A record holds the protocol (trials, dev seeds, objective, sampler, metric and its
direction), the search space, every trial (its settings, state, and per run: id,
seeds, status, objective, FLOPs; the mean objective) and, once every trial is
told, the chosen trial and the test runs that use its settings. It is derived
from the journal and the run folders, so a results folder copied without the
journal still reports its sweeps.

How a run scores (:func:`run_objective`): ``final`` is its final metric, ``auc`` the
area under its metric-vs-FLOPs curve over the FLOPs spanned (the mean metric over
training), ``flops_to_target`` the FLOPs at its first evaluation reaching the
suite's ``eval.target``; a run that never reaches it scores twice its budget
(:data:`TARGET_PENALTY`). A trial's objective is the mean over its dev runs; a trial
with a run that failed or diverged, or settings that make no valid run, is failed:
it counts as one of the method's trials and can never be chosen.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import pandas as pd

from kdbench.files import atomic_write_json
from kdbench.run.curves import curve_auc, flops_to_target
from kdbench.run.store import RunFolder, read_json

TUNING = "tuning"
TARGET_PENALTY = 2.0  # a dev run that never reaches the target scores this many times its budget
WITHIN = 0.05  # a trial is "within" when this close to the best: absolute, or relative for FLOPs to target
TRIAL_COLUMNS = ["task", "method", "trial", "state", "settings", "objective", "objectives", "run_ids", "flops",
                 "chosen", "error", "kind", "maximize", "protocol"]


def record_path(out: Path, task: str, method: str) -> Path:
    """Where the sweep of ``method`` on ``task`` is recorded."""
    return Path(out) / TUNING / task / f"{method}.json"


def write_record(out: Path, record: dict) -> Path:
    """Write one sweep's record atomically; return its path."""
    path = record_path(out, record["task"], record["method"])
    atomic_write_json(path, record)
    return path


def run_objective(run: RunFolder, objective: str, target: Optional[float]) -> tuple[Optional[float], Optional[str]]:
    """(the run's score, None), or (None, why it has none: not finished, no curve to score)."""
    if not run.done or run.status != "finished":
        why = run.problem or (run.summary or {}).get("error") or (
            f"diverged at step {run.summary.get('diverged_at')}" if run.status == "diverged" else run.status)
        return None, f"run {run.path.name} {run.status}: {why}"
    summary, curve = run.summary, run.curve
    metric = summary["metric"]
    if objective == "final":
        return float(summary["metrics"][metric]), None
    if objective == "auc":
        value = curve_auc(curve, metric)
        if math.isnan(value):
            return None, f"run {run.path.name}: fewer than two evaluations, no AUC"
        return value, None
    value = flops_to_target(curve, metric, target, bool(summary["higher_is_better"]))
    return (TARGET_PENALTY * float(summary["budget_flops"]) if math.isnan(value) else value), None


def _records(out: Path, keep: Optional[set]) -> list[dict]:
    """Every readable record of ``out``; with ``keep`` (run ids), those whose trial runs are all in it."""
    records = []
    for path in sorted((Path(out) / TUNING).glob("*/*.json")):
        record = read_json(path)
        if not isinstance(record, dict) or not isinstance(record.get("trials"), list):
            continue
        ids = {run["run_id"] for t in record["trials"] for run in t.get("runs", [])}
        if keep is None or ids <= keep:
            records.append(record)
    return records


def read_trials(out: Path, keep: Optional[set] = None) -> pd.DataFrame:
    """One row per trial of every sweep recorded in ``out`` (see :meth:`kdbench.results.Results.tuning`)."""
    rows = []
    for record in _records(out, keep):
        protocol, chosen = record.get("protocol", {}), (record.get("chosen") or {}).get("trial")
        for t in record["trials"]:
            runs = t.get("runs", [])
            rows.append({
                "task": record["task"], "method": record["method"], "trial": t["number"], "state": t["state"],
                "settings": t.get("settings", {}), "objective": _num(t.get("objective")),
                "objectives": {seed_label(r): _num(r.get("objective")) for r in runs},
                "run_ids": [r["run_id"] for r in runs], "flops": float(sum(r.get("flops") or 0 for r in runs)),
                "chosen": t["number"] == chosen, "error": t.get("error"), "kind": protocol.get("objective"),
                "maximize": protocol.get("maximize"), "protocol": protocol})
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def seed_label(run: dict) -> str:
    """How a trial run is named in tables: ``seed 100``, with its teacher seed when not 0."""
    teacher = f" (teacher {run['teacher_seed']})" if run.get("teacher_seed") else ""
    return f"seed {run['seed']}{teacher}"


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def within(values: pd.Series, best: float, kind: str) -> pd.Series:
    """Which ``values`` are within :data:`WITHIN` of ``best``: in the objective's units, and for
    FLOPs to target (lower is better, spanning orders of magnitude) within 5% above it."""
    if kind == "flops_to_target":
        return values <= best * (1 + WITHIN)
    return (values - best).abs() <= WITHIN + 1e-12


def sensitivity(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method): trials, failed, best, median and worst objective over the completed
    trials, and how many trials (of all) came within :data:`WITHIN` of the best."""
    columns = ["task", "method", "trials", "failed", "best", "median", "worst", "within", "kind", "maximize"]
    rows = []
    for (task, method), g in trials.groupby(["task", "method"], sort=False):
        done = g[g.state == "complete"].objective.dropna()
        kind, maximize = g.kind.iloc[0], bool(g.maximize.iloc[0])
        best = (done.max() if maximize else done.min()) if len(done) else math.nan
        worst = (done.min() if maximize else done.max()) if len(done) else math.nan
        rows.append({"task": task, "method": method, "trials": len(g), "failed": int((g.state == "failed").sum()),
                     "best": best, "median": float(done.median()) if len(done) else math.nan, "worst": worst,
                     "within": int(within(done, best, kind).sum()) if len(done) else 0, "kind": kind,
                     "maximize": maximize})
    return pd.DataFrame(rows, columns=columns)


def settings_text(settings: dict) -> str:
    """Settings as ``name=value`` pairs, numbers with 4 significant digits."""
    def value(v):
        return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if not isinstance(v, str) else v
    return ", ".join(f"{k}={value(v)}" for k, v in settings.items())
