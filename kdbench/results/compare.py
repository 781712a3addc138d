"""Results folders side by side: the same (task, method) rows across folders, against a reference folder.

::

    cmp = kdbench.compare_results(["out/before", "out/after"])
    cmp.frame              # one row per (task, method, folder)
    print(cmp.render("md"))

Each folder is read with :func:`kdbench.results.load_results` (the runs of the suite last run
into it, unless ``all_runs``) and aggregated per task and row label as its leaderboard is
(:func:`kdbench.results.leaderboard.method_frame`). Every other folder is compared with the
reference folder in two ways: ``diff``, the difference of the means whatever the seeds, and
``delta``, the paired difference over the (teacher seed, seed) runs finished in both folders
(:func:`kdbench.results.leaderboard.paired`, the leaderboard's Δ against its baseline, here with
the folders in place of the methods). Where a row's runs have another config than in the
reference (``same_config`` False) the comparison is across settings, not of repeated runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import pandas as pd
from tabulate import tabulate

from kdbench import __version__
from kdbench.errors import UserError
from kdbench.formats import is_missing, latex_escape
from kdbench.results.folder import Results, load_results
from kdbench.results.leaderboard import differing_params, method_frame, paired
from kdbench.results.render import (FORMATS, interval_text, json_ready, latex_prose, latex_symbols, md_escape,
                                    plus_minus)

# a folder's numbers for a row, from its leaderboard's aggregation
FOLDER_NUMBERS = ("runs", "n", "mean", "std", "ci_low", "ci_high", "ci_method", "auc")
# against the reference: the paired comparison, as the leaderboard's against its baseline
PAIRED_NUMBERS = ("delta", "delta_std", "pairs", "better", "tied", "delta_ci_low", "delta_ci_high",
                  "delta_ci_method", "delta_auc")
COUNTS = ("runs", "n", "pairs", "better", "tied")
COLUMNS = ("task", "method", "folder", "path", "reference", "metric", "higher_is_better", *FOLDER_NUMBERS,
           "config_key", "diff", "diff_auc", "same_config", "differs_in", *PAIRED_NUMBERS)


@dataclass(frozen=True)
class Folder:
    """One compared results folder: its label in the tables, its path, and what was read from it."""

    label: str
    path: Path
    results: Results
    runs: pd.DataFrame  # results.runs(), read once


def folder_labels(paths: Sequence[Union[str, Path]], labels: Optional[Sequence[str]] = None) -> list[str]:
    """The tables' name of each folder: ``labels`` when given (one per folder, non-empty, distinct),
    else the folders' names, with as many parent folders as it takes to tell them apart."""
    if labels is not None:
        labels = [str(label).strip() for label in labels]
        if len(labels) != len(paths):
            raise UserError(f"--labels: {len(labels)} label(s) for {len(paths)} folders; give one per folder, "
                            "in the folders' order, separated by commas")
        if not all(labels) or len(set(labels)) != len(labels):
            raise UserError(f"--labels: {','.join(labels)}: every label must be non-empty and differ from the others")
        return labels
    parts = [Path(p).resolve().parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{p[-1] if p else '/'} ({i + 1})" for i, p in enumerate(parts)]  # the same folder given twice


def _read(paths, labels: list[str], all_runs: bool) -> list[Folder]:
    folders = []
    for i, (path, label) in enumerate(zip(paths, labels)):
        try:
            res = load_results(path, all_runs)
        except UserError as exc:
            raise UserError(f"folder {i + 1} ({label}): {exc}") from None
        runs = res.runs()
        if runs.empty:
            raise UserError(f"folder {i + 1} ({label}): {path}: no readable runs to compare"
                            + ("" if all_runs else " of the suite last run into it (--all-runs reads every run)"))
        folders.append(Folder(label, Path(path), res, runs))
    return folders


def _metrics(folders: list[Folder]) -> dict[str, tuple[str, bool]]:
    """Every task's metric and direction; a task measured in two metrics is a UserError naming both folders."""
    seen: dict[str, tuple[str, bool, Folder]] = {}
    for f in folders:
        for task, g in f.runs.groupby("task", sort=False):
            metric = str(g.metric.iloc[0])
            if task in seen and seen[task][0] != metric:
                first = seen[task][2]
                raise UserError(f"task {task}: its metric is {seen[task][0]} in {first.path} ({first.label}) but "
                                f"{metric} in {f.path} ({f.label}); compare folders whose tasks share their metric")
            seen.setdefault(task, (metric, bool(g.higher_is_better.iloc[0]), f))
    return {task: (metric, hib) for task, (metric, hib, _) in seen.items()}


def _against(runs: pd.DataFrame, ref_runs: pd.DataFrame, row: dict, ref_row: dict, labels: tuple[str, str]) -> dict:
    """One folder's row against the reference's: differences of the means, config, and the paired delta."""
    out = {"diff": row["mean"] - ref_row["mean"], "diff_auc": row["auc"] - ref_row["auc"], "same_config": None,
           "differs_in": "", **dict.fromkeys(PAIRED_NUMBERS, math.nan)}
    if runs.empty or ref_runs.empty:
        return out
    out["same_config"] = set(runs.config_key) == set(ref_runs.config_key)
    if not out["same_config"]:
        params = differing_params({labels[0]: ref_runs.config.iloc[0], labels[1]: runs.config.iloc[0]})
        out["differs_in"] = "; ".join(f"{k}: {v} in {labels[0]}, {params[labels[1]][k]} in {labels[1]}"
                                      for k, v in params[labels[0]].items())
    ref, other = labels
    both = pd.concat([ref_runs.assign(method=ref), runs.assign(method=other)], ignore_index=True)
    delta = paired(both, ref)
    if len(delta):
        out.update({k: delta[k].iloc[0] for k in PAIRED_NUMBERS})
    return out


def _task_rows(task: str, metric: tuple[str, bool], folders: list[Folder], ref: Folder) -> list[dict]:
    """The rows of one task: per row label (the reference's order first, best first), one row per folder."""
    runs = {f.label: f.runs[f.runs.task == task] for f in folders}
    frames = {label: method_frame(g).set_index("method") if len(g) else None for label, g in runs.items()}
    methods = list(dict.fromkeys(m for f in [ref, *folders] if frames[f.label] is not None
                                 for m in frames[f.label].index))
    rows = []
    for method in methods:
        numbers = {}
        for f in folders:
            frame = frames[f.label]
            found = frame is not None and method in frame.index
            numbers[f.label] = ({k: frame.at[method, k] for k in FOLDER_NUMBERS} if found else
                                {**dict.fromkeys(FOLDER_NUMBERS, math.nan), "runs": 0, "n": 0, "ci_method": None})
        for f in folders:
            g = runs[f.label][runs[f.label].method == method]
            row = {"task": task, "method": method, "folder": f.label, "path": str(f.path), "reference": f is ref,
                   "metric": metric[0], "higher_is_better": metric[1], **numbers[f.label],
                   "config_key": ", ".join(sorted(set(g.config_key)))}
            if f is not ref:
                ref_g = runs[ref.label][runs[ref.label].method == method]
                row.update(_against(g, ref_g, numbers[f.label], numbers[ref.label], (ref.label, f.label)))
            rows.append(row)
    return rows


@dataclass
class Comparison:
    """Results folders compared: :attr:`frame` holds one row per (task, method, folder) (see
    :func:`compare_results`), :meth:`render` writes it as tables, one per task."""

    frame: pd.DataFrame
    folders: list[Folder]
    reference: str  # the label of the folder the others are compared with
    tasks: dict[str, tuple[str, bool]] = field(default_factory=dict)  # task -> (metric, higher is better)

    def render(self, fmt: str = "md") -> str:
        """The comparison as ``md``, ``latex``, ``csv`` or ``json`` text."""
        kind = FORMATS.get(fmt)
        if kind is None:
            raise UserError(f"--format: unknown format {fmt!r}; allowed: md, latex, csv, json")
        if kind == "csv":
            frame = self.frame.copy()
            frame[list(COUNTS)] = frame[list(COUNTS)].astype("Float64").round().astype("Int64")
            return frame.to_csv(index=False)
        if kind == "json":
            doc = {"kdbench_version": __version__, "reference": self.reference,
                   "folders": [{"label": f.label, "path": str(f.path)} for f in self.folders],
                   "tasks": [{"task": t, "metric": m, "higher_is_better": h} for t, (m, h) in self.tasks.items()],
                   "rows": self.frame.to_dict("records")}
            return json.dumps(json_ready(doc), indent=1) + "\n"
        return _markdown(self) if kind == "md" else _latex(self)


def compare_results(folders: Sequence[Union[str, Path]], labels: Optional[Sequence[str]] = None, reference: int = 0,
                    all_runs: bool = False) -> Comparison:
    """Compare two or more results folders (``kdbench compare``): per (task, row label) present in
    any of them, each folder's mean, std and number of finished runs of the task's metric and its
    AUC, and against the ``reference`` folder (an index into ``folders``, default the first):
    ``diff`` (difference of the means), ``diff_auc``, ``same_config`` (whether the row's runs have
    the same config in both; ``differs_in`` names the params that differ) and the paired delta over
    (teacher seed, seed) pairs finished in both (``delta``, ``delta_std``, ``pairs``, ``better``,
    ``tied``, its 95% interval ``delta_ci_low``/``delta_ci_high`` as the leaderboard's, ``delta_auc``).

    ``labels`` name the folders in the tables (default: the folders' names, told apart by their
    parents). A folder that is not a results folder, or a task whose metric differs between
    folders, is a UserError."""
    folders = list(folders)
    if len(folders) < 2:
        raise UserError(f"compare: {len(folders)} results folder(s) given; give two or more")
    if not 0 <= reference < len(folders):
        raise UserError(f"reference: {reference} is not a folder's index; allowed: 0 to {len(folders) - 1}")
    read = _read(folders, folder_labels(folders, labels), all_runs)
    tasks = _metrics(read)
    ref = read[reference]
    order = list(dict.fromkeys([*ref.results.order("tasks", list(dict.fromkeys(ref.runs.task))), *tasks]))
    rows = [row for task in order for row in _task_rows(task, tasks[task], read, ref)]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return Comparison(frame, read, ref.label, {t: tasks[t] for t in order})


# ---------------------------------------------------------------- text


def _folder_cell(r: dict) -> str:
    if not r["runs"]:
        return "-"
    n, runs = int(r["n"]), int(r["runs"])
    return f"{plus_minus(r['mean'], r['std'])} ({n}" + (f" of {runs})" if n != runs else ")")


def _signed(x) -> str:
    return "-" if is_missing(x) else f"{x:+.4f}"


def _better(r: dict) -> str:
    if is_missing(r["pairs"]) or not r["pairs"]:
        return "-"
    tied = int(r["tied"])
    return f"{int(r['better'])}/{int(r['pairs'])}" + (f" ({tied} tied)" if tied else "")


def table(cmp: Comparison, task: str) -> pd.DataFrame:
    """One task's comparison as plain-text cells: a row per row label, a column per folder, then per
    other folder its differences from the reference."""
    ref = cmp.reference
    others = [f.label for f in cmp.folders if f.label != ref]
    records = []
    for method, g in cmp.frame[cmp.frame.task == task].groupby("method", sort=False):
        by = {r["folder"]: r for r in g.to_dict("records")}
        cells = {"Method": method, **{f.label: _folder_cell(by[f.label]) for f in cmp.folders}}
        for o in others:
            r = by[o]
            cells.update({
                f"{o} - {ref}": _signed(r["diff"]),
                f"Δ {o} - {ref} (paired)": plus_minus(r["delta"], r["delta_std"], sign="+"),
                f"{o} better in": _better(r),
                f"Δ {o} 95% CI": interval_text(r["delta_ci_low"], r["delta_ci_high"]),
                f"AUC {o} - {ref}": _signed(r["diff_auc"]),
                f"{o} config": "-" if r["same_config"] is None else "same" if r["same_config"] else "differs"})
        records.append(cells)
    return pd.DataFrame(records)


def notes(cmp: Comparison, task: str) -> list[str]:
    """The lines under one task's table: what the cells are, the paired delta's sign, configs that differ."""
    metric, hib = cmp.tasks[task]
    ref = cmp.reference
    lines = [f"{metric}: {'higher' if hib else 'lower'} is better. A folder's cell: mean ± std over its finished "
             "(teacher seed, seed) runs (their number, of the runs when some did not finish); - where the folder "
             "has no run of the row.",
             f"X - {ref}: difference of the means, whatever the seeds. Δ X - {ref} (paired): mean ± std of X - {ref} "
             f"over the (teacher seed, seed) pairs finished in both folders; positive when X's {metric} is higher, "
             f"which is {'better' if hib else 'worse'}. Better in: pairs where X is better (ties counted apart). "
             "Δ 95% CI: Student-t over the pairs with one teacher seed, over the per-teacher mean differences with "
             f"several. AUC X - {ref}: difference of the mean AUCs (the mean {metric} over training)."]
    rows = cmp.frame[(cmp.frame.task == task) & (cmp.frame.same_config == False)]  # noqa: E712 - None is unknown
    for r in rows.itertuples():
        lines.append(f"{r.method}: {r.folder}'s runs have another config than {ref}'s ({r.differs_in}): "
                     "the comparison is across settings, not of repeated runs.")
    return lines


def folder_lines(cmp: Comparison) -> list[str]:
    """The lines before the tables: each folder's label and path, the reference first."""
    return [f"Folders compared (against {cmp.reference}): "
            + "; ".join(f"{f.label} = {f.path}" for f in cmp.folders) + "."]


def _markdown(cmp: Comparison) -> str:
    parts = [*folder_lines(cmp), ""]
    for task, (metric, hib) in cmp.tasks.items():
        cells = table(cmp, task)
        rows = [[md_escape(v) for v in row] for row in cells.values.tolist()]
        parts += [f"### {task}: {metric} {'↑' if hib else '↓'}\n",
                  tabulate(rows, headers=[md_escape(h) for h in cells.columns], tablefmt="github",
                           disable_numparse=True, colalign=("left",) + ("right",) * (len(cells.columns) - 1)), ""]
        for line in notes(cmp, task):
            parts += [line, ""]
    return "\n".join(parts)


def _latex(cmp: Comparison) -> str:
    parts = ["% kdbench compare; needs \\usepackage{booktabs,graphicx}"]
    for task, (metric, _) in cmp.tasks.items():
        cells = table(cmp, task)
        tabular = cells.style.hide(axis="index").format(escape="latex", formatter=latex_symbols) \
            .format_index(escape="latex", formatter=latex_symbols, axis=1) \
            .to_latex(hrules=True, column_format="l" + "r" * (len(cells.columns) - 1)).rstrip("\n")
        text = " ".join(latex_prose(n) for n in folder_lines(cmp) + notes(cmp, task))
        parts += ["\\begin{table}[t]", "\\centering",
                  f"\\caption{{{latex_escape(task)}: final {latex_escape(metric)} across results folders.}}",
                  "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%", tabular + "}",
                  "\\par\\smallskip", f"\\begin{{minipage}}{{\\linewidth}}\\footnotesize\\raggedright {text}\\par",
                  "\\end{minipage}", "\\end{table}", ""]
    return "\n".join(parts)
