"""One self-contained HTML file of a results folder: the leaderboard as sortable tables, each task's
curves as interactive plots, the tuning protocol and the provenance.

Nothing is fetched when it is viewed: plotly.js (from the ``plotly`` Python package's offline
bundle, about 4.8 MB) and the report's own script (:mod:`kdbench.results.html_assets`) are
inlined, and the data is a JSON ``<script type="application/json" id="kd-data">`` element:
``{"title", "tasks": [per task: metric, axes, per method its mean/min/max curves], "runs": [...]}``.
The tables are the leaderboard's own cells (:func:`kdbench.results.render.table`), so the file
says what ``leaderboard.md`` says; every text is escaped.

Written by ``kdbench run`` (``OUT/report.html``), ``kdbench report`` (``OUT/report.html``) and
``kdbench html``.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from plotly.offline import get_plotlyjs

from kdbench.errors import UserError
from kdbench.files import atomic_write_text
from kdbench.results.bands import AXES, COLUMN, metric_label, seed_band
from kdbench.results.claims import CLAIMS_NOTE, HEADERS, claim_rows
from kdbench.results.folder import Results
from kdbench.results.html_assets import SCRIPT, STYLE
from kdbench.results.leaderboard import FIDELITY, Board, Leaderboard, build_leaderboard
from kdbench.results.provenance import LIBRARIES, versions
from kdbench.results.render import FIDELITY_HEADERS, columns, folder_notes, many_teachers, notes, table, teacher_table
from kdbench.tuning.report import protocol_lines, sensitivity_cells, trial_cells, tuned_tasks

# matplotlib's default cycle (tab10), as the static figures colour the methods
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
NUMBER = re.compile(r"^[+\-]?(?:\d+\.?\d*|\.\d+)(?:e[+\-]?\d+)?(?=$|[\s/%()])")
RUN_FIELDS = ("run_id", "task", "method", "seed", "teacher_seed", "status", "value", "flops", "steps")


def write_html_report(results: Results, path, baseline: Optional[str] = None, ci: bool = False,
                      info: Optional[dict] = None) -> Path:
    """Write the HTML report of ``results`` to ``path`` (atomically) and return its path.
    ``baseline`` and ``ci`` are the leaderboard's (``kdbench leaderboard --baseline``, ``--ci``);
    ``info`` is the provenance (default: :func:`kdbench.results.provenance.versions` of ``results``).
    A folder without a run to show is a UserError, and nothing is written."""
    board = build_leaderboard(results, baseline, ci)
    if not board.boards:
        raise UserError(f"{results.path}: no runs to show; no HTML report written")
    path = Path(path)
    atomic_write_text(path, html_report(results, board, versions(results) if info is None else info))
    return path


def html_report(results: Results, board: Leaderboard, info: dict) -> str:
    """The page: title, leaderboard, curves, tuning, provenance, then the data and the scripts."""
    title = board.suite or (results.suite or {}).get("suite") or results.path.name
    data = {"title": title, "tasks": plot_data(results), "runs": _runs_data(results)}
    tuning = _tuning_section(results)
    sections = [("leaderboard", "Leaderboard", _leaderboard_section(board)),
                ("curves", "Curves", _curves_section(data["tasks"]))]
    sections += [("tuning", "Tuning", tuning)] if tuning else []
    sections.append(("provenance", "Provenance", _provenance_section(results, info)))
    nav = " ".join(f'<a href="#{key}">{name}</a>' for key, name, _ in sections)
    body = "\n".join(f'<section id="{key}">\n<h2>{name}</h2>\n{text}\n</section>' for key, name, text in sections)
    made = time.strftime("%Y-%m-%d %H:%M:%S %z")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}: kdbench report</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="kd-sub">kdbench {_esc(info.get("kdbench"))} report of <code>{_esc(results.path)}</code>, '
        f"made {_esc(made)}. Self-contained: open it anywhere, nothing is fetched.</p>",
        f"<nav>{nav}</nav>", body,
        f'<script type="application/json" id="kd-data">{_json(data)}</script>',
        f"<script>{get_plotlyjs()}</script>", f"<script>{SCRIPT}</script>", "</body>", "</html>", ""])


# ---------------------------------------------------------------- text and tables


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _prose(text: str) -> str:
    """A note as HTML: escaped, with ``code`` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))


def _json(obj) -> str:
    """``obj`` as JSON safe inside a ``<script>`` element (no ``<`` left to end it)."""
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")


def _leading_number(text: str) -> Optional[float]:
    match = NUMBER.match(text.strip())
    return float(match.group(0)) if match else None


def _numeric(cells: list[str]) -> bool:
    """Whether a column sorts by number: some cell starts with one and none starts with a digit
    that is not a number (``2-shot``)."""
    found = [_leading_number(c) for c in cells]
    return any(v is not None for v in found) and not any(
        v is None and c[:1].isdigit() for v, c in zip(found, cells))


def html_table(cells: pd.DataFrame, best: Optional[pd.DataFrame] = None, values: Optional[dict] = None,
               text: tuple = (), wrap: tuple = ()) -> str:
    """``cells`` (text, headers as columns) as a sortable HTML table. ``best`` marks cells bold;
    ``values`` gives a column's exact numbers to sort by (else a numeric column sorts by each
    cell's leading number); ``text`` names columns that sort as text, ``wrap`` those whose
    text may wrap."""
    values = values or {}
    head, kinds = [], {}
    for col in cells.columns:
        shown = [str(v) for v in cells[col]]
        kinds[col] = "num" if col in values or (col not in text and _numeric(shown)) else "text"
        css = ' class="kd-text"' if kinds[col] == "text" else ""
        head.append(f'<th data-sort="{kinds[col]}"{css} scope="col">{_esc(col)}</th>')
    rows = []
    for i, record in enumerate(cells.itertuples(index=False)):
        tds = []
        for j, (col, cell) in enumerate(zip(cells.columns, record)):
            classes = (["kd-best"] if best is not None and bool(best.iloc[i, j]) else []) \
                + (["kd-wrap"] if col in wrap else []) + (["kd-text"] if kinds[col] == "text" else [])
            attrs = f' class="{" ".join(classes)}"' if classes else ""
            if kinds[col] == "num":
                v = values[col][i] if col in values else _leading_number(str(cell))
                v = None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)
                attrs += f' data-v="{"" if v is None else repr(v)}"'
            tds.append(f"<td{attrs}>{_esc(cell)}</td>")
        rows.append(f"<tr>{''.join(tds)}</tr>")
    return (f'<div class="kd-scroll"><table class="kd-sortable"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _board_section(b: Board) -> str:
    """One task's leaderboard: the table (exact numbers behind the keyed columns), the per-teacher
    table with several teacher seeds, and the notes under it."""
    cells, best = table(b)
    values = {c.header(b): [None if pd.isna(v) else float(v) for v in b.methods[c.key]]
              for c in columns(b) if c.key}
    parts = [f"<h3>{_esc(b.task)}</h3>", html_table(cells, best, values, text=("Method",))]
    if many_teachers(b) and b.per_teacher is not None:
        per = teacher_table(b).reset_index()
        parts += [f'<p class="kd-note">Per teacher seed: {_esc(b.metric)}, mean ± std over its finished student '
                  "seeds (their number).</p>", html_table(per, text=("Method",))]
    parts += [f'<p class="kd-note">{_prose(line)}</p>' for line in notes(b)]
    return "\n".join(parts)


def _leaderboard_section(board: Leaderboard) -> str:
    parts = [_board_section(b) for b in board.boards]
    parts += [f'<p class="kd-note">{_prose(line)}</p>' for line in folder_notes(board)]
    if board.claims is not None and board.claims.claims:
        cells = pd.DataFrame(claim_rows(board.claims), columns=list(HEADERS))
        parts += ["<h3>Claims</h3>", html_table(cells, text=("Claim", "Task", "Metric"), wrap=("Claim", "Overall")),
                  f'<p class="kd-note">{_prose(CLAIMS_NOTE)}</p>']
    return "\n".join(parts)


def _tuning_section(results: Results) -> str:
    """Per tuned task: the protocol and chosen settings, each method's sensitivity, every trial;
    empty for a folder without a sweep."""
    tasks, untuned = tuned_tasks(results)
    parts = []
    for t in tasks:
        parts += [f"<h3>{_esc(t.task)}</h3>"]
        parts += [f'<p class="kd-note">{_prose(line)}</p>' for line in protocol_lines(t, untuned.get(t.task, []))]
        parts += [f'<p class="kd-note">Sensitivity to settings: the mean {_esc(t.objective)} over the dev seeds of '
                  "each trial.</p>", html_table(sensitivity_cells(t), text=("Method",)),
                  '<p class="kd-note">Every trial:</p>', html_table(trial_cells(t), text=("Method", "Settings"),
                                                                    wrap=("Settings", "State"))]
    return "\n".join(parts)


def _provenance_section(results: Results, info: dict) -> str:
    """What made the report and the runs: versions, git commit, the suite, the plugins."""
    git = info.get("git") or {}
    commit = (f"{git['commit']}{' (with uncommitted changes)' if git.get('dirty') else ''}" if git
              else "not a git checkout")
    manifest = results.suite or {}
    used = info.get("used_by_runs") or {}
    rows = [("kdbench", info.get("kdbench")), ("git commit", commit), ("python", info.get("python")),
            ("platform", info.get("platform")), ("torch", info.get("torch")), ("CUDA", info.get("cuda") or "none"),
            *[(k, info[k]) for k in LIBRARIES if k in info],
            ("suite", f"{manifest.get('suite', '-')} (sha256 {manifest.get('sha256', '-')}, first run "
                      f"{manifest.get('time', '-')})" if manifest else "no suite.json"),
            *[(f"runs used: {k}", ", ".join(v) or "-") for k, v in used.items()],
            ("plugin failures", "; ".join(f"{k}: {v}" for k, v in (info.get("plugin_failures") or {}).items())
             or "none")]
    kv = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in rows)
    plugins = pd.DataFrame(info.get("plugins") or [], columns=["kind", "name", "version", "from"])
    return "\n".join([f'<dl class="kd-kv">{kv}</dl>', "<h3>Plugins installed</h3>",
                      html_table(plugins, text=("kind", "name", "version", "from"))])


# ---------------------------------------------------------------- curves


def _numbers(a) -> list:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(a, dtype=float)]


def _band(curves: pd.DataFrame, y: str, x: str) -> Optional[dict]:
    xs, mean, lo, hi = seed_band(curves, y, x)
    return {"x": _numbers(xs), "mean": _numbers(mean), "lo": _numbers(lo), "hi": _numbers(hi)} if len(xs) else None


def _last_points(curves: pd.DataFrame, ids, y: str, x: str) -> dict:
    """The last evaluation of each run in ``ids`` with a finite ``y`` (a diverged run's ``x`` marks)."""
    column = COLUMN[x]
    xs, ys = [], []
    for run_id in ids:
        points = curves[curves.run_id == run_id]
        points = points[np.isfinite(points[y].astype(float))] if y in points else points.iloc[:0]
        if len(points):
            xs.append(float(points[column].iloc[-1]))
            ys.append(float(points[y].iloc[-1]))
    return {"x": xs, "y": ys}


def _method_data(g: pd.DataFrame, curves: pd.DataFrame, ys: list[str], color: str) -> dict:
    """One method's curves in a task: per x axis and y column its band over finished runs, and the
    diverged runs' last points."""
    done = g[g.status == "finished"]
    mine = curves[curves.run_id.isin(done.run_id)]
    diverged = list(g.run_id[g.status == "diverged"])
    problems = g.status[g.status != "finished"].value_counts()
    label = f"{g.method.iloc[0]} (n={len(done)}" + "".join(f", {n} {st}" for st, n in problems.items()) + ")"
    series = {x: {y: b for y in ys if (b := _band(mine, y, x)) is not None} for x in AXES}
    return {"method": g.method.iloc[0], "label": label, "color": color, "n": len(done), "series": series,
            "diverged": {x: {y: _last_points(curves, diverged, y, x) for y in ys} for x in AXES}}


def plot_data(results: Results) -> list[dict]:
    """Per task, what its plot draws: the metric and the fidelity columns measured (``y``: column ->
    axis title), the x axes (``x``), the default x axis (steps for a budget in student steps), each
    method's curves (:func:`_method_data`) and the teachers' own training curves."""
    runs, curves = results.runs(), results.curves()
    if runs.empty:
        return []
    axes = dict(AXES)
    if "step" not in curves or curves["step"].isna().all():  # curves without steps: samples stand in for them
        curves = curves.assign(step=curves.get("samples", math.nan))
        axes["steps"] = "training samples"
    methods = results.order("methods", sorted(set(runs.method)))
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}
    teacher_curves = results.teacher_curves()
    tasks = []
    for task in results.order("tasks", list(dict.fromkeys(runs.task))):
        g = runs[runs.task == task]
        metric, hib = g.metric.iloc[0], bool(g.higher_is_better.iloc[0])
        measured = curves[curves.run_id.isin(g.run_id)]
        ys = {metric: metric_label(metric, hib)}
        ys.update({c: f"{FIDELITY_HEADERS[c]} (against the final teacher)" for c in FIDELITY
                   if c in measured and measured[c].notna().any()})
        by_steps = all(isinstance(b, dict) and b.get("student_steps") for b in g.budget_spec)
        teachers = []
        for tid in dict.fromkeys(g.teacher_id.dropna()):
            mine = teacher_curves[teacher_curves.teacher_id == tid] if len(teacher_curves) else teacher_curves
            series = {x: {metric: b} for x in AXES if len(mine) and (b := _band(mine, metric, x)) is not None}
            teachers += [{"teacher_id": str(tid), "series": series}] if series else []
        tasks.append({"task": task, "metric": metric, "higher_is_better": hib, "x": axes, "y": ys,
                      "default_x": "steps" if by_steps else "flops", "teachers": teachers,
                      "methods": [_method_data(g[g.method == m], curves, list(ys), colors[m])
                                  for m in methods if m in set(g.method)]})
    return tasks


def _runs_data(results: Results) -> list[dict]:
    """Every run's identity, status and final numbers (NaN as null)."""
    runs = results.runs()
    out = []
    for r in runs[[c for c in RUN_FIELDS if c in runs]].to_dict("records"):
        out.append({k: (None if isinstance(v, float) and not math.isfinite(v)
                        else v.item() if hasattr(v, "item") else v) for k, v in r.items()})
    return out


def _curves_section(tasks: list[dict]) -> str:
    """Per task a figure with its buttons: x axis, curve (metric or fidelity) and y scale."""
    parts = ['<p class="kd-note">Each method: the mean over its finished runs (every teacher seed and seed), a band '
             "from their minimum to their maximum; hover for the values, click a legend entry to hide or show a "
             "method, drag to zoom (double-click: back). An <code>x</code>: a diverged run's last evaluation.</p>"]
    for i, t in enumerate(tasks):
        groups = [("x", "x", [(k, "FLOPs" if k == "flops" else t["x"][k].split()[-1]) for k in t["x"]]),
                  ("curve", "y", [(k, FIDELITY_HEADERS.get(k, k)) for k in t["y"]]),
                  ("scale", "scale", [("linear", "linear"), ("log", "log")])]
        controls = '<span class="kd-gap"></span>'.join(
            f"<span>{name}:</span>" + "".join(f'<button type="button" data-axis="{axis}" data-value="{_esc(v)}">'
                                              f"{_esc(label)}</button>" for v, label in options)
            for name, axis, options in groups)
        parts.append(f'<div class="kd-plot" data-task="{i}"><h3>{_esc(t["task"])}</h3>'
                     f'<div class="kd-controls">{controls}</div><div class="kd-figure"></div></div>')
    return "\n".join(parts)
