"""A tuning sweep as tables: the protocol, every trial, and how sensitive each method is to its settings.

The sensitivity table has, per method, its trials' objectives over the dev seeds:
the best, the median and the worst complete trial, and how many of its trials
came within 0.05 of the best (in the objective's units: accuracy points for
``final`` and ``auc``; for ``flops_to_target``, within 5% of the best FLOPs). A
method whose trials are mostly within works with most settings of its space; one
with few needs its settings found, and the sweep's cost (its Tuning FLOPs) is
part of what it costs to use. Failed trials count in ``trials`` and never as
within. Used by the leaderboard (under each tuned task's table),
``kdbench tune-report`` and ``kdbench report`` (``tables/tuning.*``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
from tabulate import tabulate

from kdbench.errors import UserError
from kdbench.files import atomic_write_text
from kdbench.formats import latex_escape
from kdbench.tuning.records import WITHIN, sensitivity, settings_text

FORMATS = ("md", "csv", "json", "latex")
OBJECTIVES = {"final": "final {metric}", "auc": "AUC of {metric}", "flops_to_target": "FLOPs to {metric} {target}"}
SAMPLERS = {"tpe": "TPE", "random": "random", "grid": "grid"}


@dataclass
class TaskTuning:
    """The sweeps of one task: the protocol, the trials (rows of ``Results.tuning()``), the
    sensitivity table, each tuned method's chosen settings and the FLOPs of all its trials, and the
    dev teachers its trials read (teacher id -> the record's entry: seed, FLOPs, given), shared by the methods."""

    task: str
    protocol: dict
    trials: pd.DataFrame
    sensitivity: pd.DataFrame
    chosen: dict[str, dict]
    flops: dict[str, float]
    dev_teachers: dict[str, dict] = field(default_factory=dict)

    @property
    def objective(self) -> str:
        """The objective in words: ``AUC of accuracy``."""
        p = self.protocol
        return OBJECTIVES[p["objective"]].format(metric=p.get("metric", "metric"), target=p.get("target"))


def task_tuning(trials: pd.DataFrame, task: str) -> Optional[TaskTuning]:
    """The :class:`TaskTuning` of ``task`` from ``Results.tuning()``; None when it was not tuned."""
    rows = trials[trials.task == task]
    if rows.empty:
        return None
    chosen = {r.method: r.settings for r in rows[rows.chosen].itertuples()}
    flops = rows.groupby("method", sort=False).flops.sum().to_dict()
    teachers = {t["teacher_id"]: t for p in rows.protocol for t in p.get("dev_teachers") or []}
    return TaskTuning(task, rows.protocol.iloc[0], rows, sensitivity(rows), chosen, flops, teachers)


def dev_text(protocol: dict) -> str:
    """Where a sweep's trials ran: ``dev seeds [100, 101] on dev teacher seeds [100]``; a record
    written before dev teacher seeds (kdbench 0.2) ran them on the test teachers."""
    if "dev_teacher_seeds" not in protocol:
        teachers = protocol.get("teacher_seeds")
        return f"dev seeds {protocol['dev_seeds']}" + (f", teacher seed(s) {teachers}" if teachers != [0] else "")
    return f"dev seeds {protocol['dev_seeds']} on dev teacher seeds {protocol['dev_teacher_seeds']}"


def dev_teachers_text(t: TaskTuning) -> str:
    """What the dev teachers cost: ``1 trained, 3.7e+11 FLOPs`` (given ones are loaded: no FLOPs)."""
    entries = list(t.dev_teachers.values())
    trained = [e for e in entries if not e.get("given") and e.get("flops") is not None]
    parts = [f"{len(trained)} trained, {sum(float(e['flops']) for e in trained):.3g} FLOPs"]
    given = sum(bool(e.get("given")) for e in entries)
    missing = len(entries) - len(trained) - given
    parts += [f"{given} given (loaded, not trained)"] * bool(given) + [f"{missing} not trained yet"] * bool(missing)
    return ", ".join(parts)


def value_text(v: float, kind: str) -> str:
    """An objective value: FLOPs with 3 significant digits, a metric with 4 decimals."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}" if kind == "flops_to_target" else f"{v:.4f}"


def protocol_lines(t: TaskTuning, untuned: list[str]) -> list[str]:
    """The lines under a tuned task's leaderboard: the protocol, and each method's chosen settings."""
    p = t.protocol
    dev = "dev_teacher_seeds" in p
    test = f" (teacher seed(s) {p['teacher_seeds']})" if dev else ""
    cost = (f" Dev teachers, a cost of the tuning shared by the methods that read them and not in that column: "
            f"{dev_teachers_text(t)}." if t.dev_teachers else "")
    lines = [f"Tuning protocol: every tuned method had the same budget of {p['trials']} trials "
             f"({SAMPLERS[p['sampler']]} sampler, Optuna, seed {p['seed']}), each scored by its mean {t.objective} "
             f"over {dev_text(p)}; its best trial's settings were then run on the test seeds{test} shown here, on "
             f"which nothing was chosen. Tuning FLOPs: the student FLOPs of all its trial runs.{cost}"
             + (f" Not tuned (run with their given params): {', '.join(untuned)}." if untuned else "")]
    chosen = []
    for method in t.sensitivity.method:
        rows = t.trials[(t.trials.method == method) & t.trials.chosen]
        if rows.empty:
            chosen.append(f"{method}: no complete trial yet (given params)")
        else:
            r = rows.iloc[0]
            dev = value_text(r.objective, r.kind)
            chosen.append(f"{method}: {settings_text(r.settings)} (trial {r.trial}, dev {dev})")
    lines.append("Chosen settings: " + "; ".join(chosen) + ".")
    return lines


def within_text(kind: str) -> str:
    """The header of the within column."""
    return "Within 5% of best" if kind == "flops_to_target" else f"Within {WITHIN:g} of best"


def sensitivity_cells(t: TaskTuning) -> pd.DataFrame:
    """The sensitivity table of ``t`` as text cells."""
    kind = t.protocol["objective"]
    return pd.DataFrame([{
        "Method": r.method, "Trials": str(r.trials), "Failed": str(r.failed), "Best": value_text(r.best, kind),
        "Median": value_text(r.median, kind), "Worst": value_text(r.worst, kind),
        within_text(kind): f"{r.within}/{r.trials} ({r.within / r.trials:.0%})"} for r in t.sensitivity.itertuples()])


def trial_cells(t: TaskTuning) -> pd.DataFrame:
    """Every trial of ``t`` as text cells: method, trial, settings, objective per dev run, mean, state."""
    seeds = list(dict.fromkeys(s for objectives in t.trials.objectives for s in objectives))
    records = []
    for r in t.trials.itertuples():
        records.append({"Method": r.method, "Trial": str(r.trial), "Settings": settings_text(r.settings),
                        **{s: value_text(r.objectives.get(s, math.nan), r.kind) for s in seeds},
                        "Mean": value_text(r.objective, r.kind) + (" (chosen)" if r.chosen else ""),
                        "State": r.state + (f": {r.error}" if r.error else "")})
    return pd.DataFrame(records)


def sensitivity_markdown(t: TaskTuning) -> str:
    """The sensitivity table of ``t`` in markdown, with its caption."""
    cells = sensitivity_cells(t)
    table = tabulate(cells.values.tolist(), headers=list(cells.columns), tablefmt="github", disable_numparse=True,
                     colalign=("left",) + ("right",) * (len(cells.columns) - 1))
    return (f"Sensitivity to settings ({t.task}): the mean {t.objective} over the dev seeds of each trial; within: "
            f"trials as good as the best up to {'5%' if t.protocol['objective'] == 'flops_to_target' else WITHIN}.\n\n"
            + table)


def _markdown(tasks: list[TaskTuning], untuned: dict[str, list[str]]) -> str:
    parts = []
    for t in tasks:
        cells = trial_cells(t)
        parts += [f"### {t.task}: tuning", "", *[line + "\n" for line in protocol_lines(t, untuned.get(t.task, []))],
                  tabulate(cells.values.tolist(), headers=list(cells.columns), tablefmt="github",
                           disable_numparse=True), "", sensitivity_markdown(t), ""]
    return "\n".join(parts)


def _csv(tasks: list[TaskTuning]) -> str:
    """One row per trial with its method's sensitivity numbers beside it."""
    frames = []
    for t in tasks:
        rows = t.trials.drop(columns=["protocol", "run_ids", "objectives", "settings"]).assign(
            settings=[json.dumps(s) for s in t.trials.settings],
            **{f"objective {s}": [o.get(s) for o in t.trials.objectives]
               for s in dict.fromkeys(k for o in t.trials.objectives for k in o)})
        sens = t.sensitivity.drop(columns=["task", "kind", "maximize"]).add_prefix("method_").rename(
            columns={"method_method": "method"})
        frames.append(rows.merge(sens, on="method", how="left"))
    return pd.concat(frames, ignore_index=True).to_csv(index=False)


def _json(tasks: list[TaskTuning]) -> str:
    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v.item() if hasattr(v, "item") else v

    doc = {"tasks": [{"task": t.task, "protocol": t.protocol, "chosen": t.chosen,
                      "tuning_flops": {k: clean(v) for k, v in t.flops.items()},
                      "trials": [{k: clean(v) for k, v in r.items() if k != "protocol"}
                                 for r in t.trials.to_dict("records")],
                      "sensitivity": [{k: clean(v) for k, v in r.items()} for r in t.sensitivity.to_dict("records")]}
                     for t in tasks]}
    return json.dumps(doc, indent=1, default=str) + "\n"


def _latex(tasks: list[TaskTuning]) -> str:
    parts = ["% kdbench tuning sweeps; needs \\usepackage{booktabs}"]
    for t in tasks:
        for caption, cells in ((f"{t.task}: sensitivity to settings ({t.objective} on dev seeds)",
                                sensitivity_cells(t)), (f"{t.task}: every trial", trial_cells(t))):
            body = cells.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1) \
                .to_latex(hrules=True, column_format="l" * len(cells.columns))
            parts += ["\\begin{table}[t]", "\\centering", f"\\caption{{{latex_escape(caption)}}}", body.rstrip(),
                      "\\end{table}", ""]
    return "\n".join(parts)


def tuned_tasks(results) -> tuple[list[TaskTuning], dict[str, list[str]]]:
    """The :class:`TaskTuning` of every tuned task of ``results``, and per task its untuned methods."""
    trials, runs = results.tuning(), results.runs()
    tasks = [t for t in (task_tuning(trials, task) for task in results.order("tasks", list(dict.fromkeys(trials.task))))
             if t is not None]
    untuned = {t.task: sorted(set(runs[runs.task == t.task].method_label) - set(t.trials.method)) if len(runs) else []
               for t in tasks}
    return tasks, untuned


def render_tuning(results, fmt: str = "md") -> str:
    """Every trial and the sensitivity tables of ``results`` as ``md``, ``csv``, ``json`` or ``latex``."""
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    tasks, untuned = tuned_tasks(results)
    if not tasks:
        raise UserError(f"{results.path}: no tuning sweep recorded (a suite with a tune: block writes "
                        f"{results.path / 'tuning'})")
    return {"md": lambda: _markdown(tasks, untuned), "csv": lambda: _csv(tasks), "json": lambda: _json(tasks),
            "latex": lambda: _latex(tasks)}[fmt]()


def write_tuning_tables(results, dest: Path) -> list[Path]:
    """Write ``dest/tuning.{md,tex,csv,json}`` when ``results`` holds a sweep; return the paths."""
    if results.tuning().empty:
        return []
    paths = []
    for fmt, ext in (("md", "md"), ("latex", "tex"), ("csv", "csv"), ("json", "json")):
        paths.append(Path(dest) / f"tuning.{ext}")
        atomic_write_text(paths[-1], render_tuning(results, fmt))
    return paths
