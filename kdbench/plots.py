"""Figures from a results folder: the metric against FLOPs, one figure per task.

Each method is a mean line over its finished seeds with a band from the seeds'
minimum to maximum; its phase boundaries (layer switches, checkpoint switches)
are dashed vertical lines in its colour; a diverged run is an ``x`` at its last
evaluation; the teacher's own training curve is optional. Figures are drawn
with matplotlib's Agg canvas (no display, no pyplot state) from the run folders
alone, and written as PNG and PDF.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .leaderboard import phase_boundaries, run_table, suite_order
from .store import _atomic_write, read_json

FORMATS = ("png", "pdf")


def seed_band(curves: list[list[dict]], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max of ``metric`` over several curves on the union of their FLOP
    points (each curve linearly interpolated inside its own FLOP range, absent outside)."""
    series = []
    for curve in curves:
        pts = [(float(p["flops"]), float(p[metric])) for p in curve
               if isinstance(p.get(metric), (int, float)) and math.isfinite(p[metric])]
        if pts:
            series.append(np.array(sorted(pts)))
    if not series:
        empty = np.array([])
        return empty, empty, empty, empty
    x = np.unique(np.concatenate([s[:, 0] for s in series]))
    ys = np.full((len(series), len(x)), np.nan)
    for i, s in enumerate(series):
        inside = (x >= s[0, 0]) & (x <= s[-1, 0])
        ys[i, inside] = np.interp(x[inside], s[:, 0], s[:, 1])
    return x, np.nanmean(ys, axis=0), np.nanmin(ys, axis=0), np.nanmax(ys, axis=0)


def _last_point(curve: list[dict], metric: str) -> Optional[tuple[float, float]]:
    pts = [(float(p["flops"]), float(p[metric])) for p in curve
           if isinstance(p.get(metric), (int, float)) and math.isfinite(p[metric])]
    return pts[-1] if pts else None


def plot_task(runs: pd.DataFrame, teacher_curves: Optional[dict[str, list[dict]]] = None,
              colors: Optional[dict[str, str]] = None) -> Figure:
    """The figure of one task's runs (rows of :func:`kdbench.leaderboard.run_table`).

    Lines on the axes: one mean line per method with a finished curve, one dashed
    vertical line per distinct phase boundary of each such method, and one line per
    teacher curve given."""
    metric, hib = runs.metric.iloc[0], bool(runs.higher_is_better.iloc[0])
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    palette = [f"C{i}" for i in range(10)]
    colors = colors or {}
    extra: list = []
    for k, (method, g) in enumerate(runs.groupby("method", sort=False)):
        color = colors.get(method, palette[k % len(palette)])
        done = g[g.status == "finished"]
        x, mean, lo, hi = seed_band(list(done.curve), metric)
        problems = g.status[g.status != "finished"].value_counts()
        label = f"{method} (n={len(done)}" + "".join(f", {n} {st}" for st, n in problems.items()) + ")"
        if len(x):
            ax.plot(x, mean, color=color, label=label)
            if len(done) > 1:
                ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
            first = done.iloc[0]
            for b in phase_boundaries(first.summary, first.curve):
                ax.axvline(b, color=color, linestyle="--", linewidth=0.8, alpha=0.6)
        else:  # no finished seed: the method still gets a legend entry, not a line
            extra.append((Line2D([], [], color=color, linestyle=""), label))
        for curve in g[g.status == "diverged"].curve:
            last = _last_point(curve, metric)
            if last is not None:
                ax.scatter([last[0]], [last[1]], marker="x", color=color, zorder=3)
    for tid, curve in (teacher_curves or {}).items():
        x, mean, _, _ = seed_band([curve], metric)
        if len(x):
            ax.plot(x, mean, color="0.4", linestyle=":", label=f"teacher {tid} (its training FLOPs)")
    handles, labels = ax.get_legend_handles_labels()
    handles += [h for h, _ in extra]
    labels += [lab for _, lab in extra]
    if any(ln.get_linestyle() == "--" for ln in ax.get_lines()):
        handles.append(Line2D([], [], color="0.5", linestyle="--", linewidth=0.8))
        labels.append("phase boundary")
    ax.legend(handles, labels, fontsize="small")
    ax.set_xlabel("training FLOPs (measured)")
    ax.set_ylabel(f"{metric} ({'higher' if hib else 'lower'} is better)")
    ax.set_title(f"{runs.task.iloc[0]}: mean over seeds, band min-max", fontsize="medium")
    ax.grid(alpha=0.3)
    return fig


def _save(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    # no timestamps in the files, so the same run folders give the same figures
    metadata = {"CreationDate": None} if path.suffix == ".pdf" else {"Software": None}
    fig.savefig(buf, format=path.suffix[1:], dpi=150, metadata=metadata)
    _atomic_write(path, lambda f: f.write(buf.getvalue()))


def write_figures(out: Path, dest: Optional[Path] = None, teacher: bool = False,
                  formats: Iterable[str] = FORMATS, runs: Optional[pd.DataFrame] = None) -> list[Path]:
    """Write ``<dest>/<task>.<format>`` for every task of results folder ``out``
    (``dest`` defaults to ``out/figures``); return the paths written."""
    runs = run_table(out) if runs is None else runs
    dest = Path(dest) if dest is not None else Path(out) / "figures"
    if runs.empty:
        return []
    methods = suite_order(out, "methods", sorted(set(runs.method)))
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}  # one colour per method across tasks
    paths = []
    for task in suite_order(out, "tasks", list(dict.fromkeys(runs.task))):
        g = runs[runs.task == task]
        g = g.iloc[sorted(range(len(g)), key=lambda i: methods.index(g.method.iloc[i]))]
        curves = {}
        if teacher:
            for tid in dict.fromkeys(g.teacher_id.dropna()):
                curve = read_json(Path(out) / "teachers" / tid / "curve.json")
                if isinstance(curve, list):
                    curves[tid] = curve
        fig = plot_task(g, curves, colors)
        for fmt in formats:
            path = dest / f"{task}.{fmt}"
            _save(fig, path)
            paths.append(path)
    return paths
