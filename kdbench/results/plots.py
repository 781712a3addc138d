"""Figures from a results folder: the metric against FLOPs (or student steps), one figure per task
(with the fidelity curves, ``<task>-agreement`` and ``<task>-teacher_kl``, where runs measured them;
``<task>-by-teacher``, a panel per teacher seed, where runs distilled from two or more; and, for a
tuned suite, one of its sweeps per task: ``tuning-<task>``).

Each method is a mean line over its finished seeds (its own colour, dash pattern and marker, so
coinciding curves stay visible and are named in the legend) with a band from the seeds' minimum to
maximum; its phase boundaries (layer switches, checkpoint switches) are short ticks in its colour
along the top edge; a diverged run is an ``x`` at its last evaluation; the teacher's own training
curve is optional, on a second panel. Figures are drawn
with matplotlib's Agg canvas (no display, no pyplot state) from a
:class:`kdbench.results.Results` (the run folders alone), and written as PNG and PDF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from kdbench.errors import UserError
from kdbench.files import atomic_write
from kdbench.results.bands import AXES, COLUMN, metric_label, seed_band
from kdbench.results.folder import Results
from kdbench.results.leaderboard import FIDELITY
from kdbench.results.probe_plots import plot_probe
from kdbench.tuning.report import TaskTuning, dev_text, task_tuning

FORMATS = ("png", "pdf")


def step_boundaries(phases: list[dict]) -> list[float]:
    """Student steps at which a run moves from one phase to the next (from its summary's phases)."""
    ends = np.cumsum([float(p.get("steps", 0)) for p in phases])
    return sorted({float(e) for e in ends[:-1] if 0 < e < ends[-1]}) if len(ends) else []


LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _style(k: int, n_points: int) -> dict:
    """Method k's line: its own dash pattern and marker, markers offset per method, so methods whose
    curves coincide stay distinguishable (the later line is drawn over the earlier, both visible)."""
    every = max(1, n_points // 6)
    return {"linestyle": LINESTYLES[k % len(LINESTYLES)], "marker": MARKERS[k % len(MARKERS)],
            "markevery": (k % every, every), "markersize": 4}


def _same_as(xs, mean, drawn: dict) -> Optional[str]:
    """The method drawn earlier whose mean curve this one coincides with, if any."""
    for method, (xs0, mean0) in drawn.items():
        if len(xs0) == len(xs) and np.allclose(xs0, xs) and np.allclose(mean0, mean, equal_nan=True):
            return method
    return None


def _boundary_ticks(ax, bounds: list[float], k: int, color: str) -> None:
    """Phase boundaries as short ticks along the top edge, one row per method: a dozen of them stay legible."""
    if bounds:
        ax.plot(bounds, [1 - 0.03 * k] * len(bounds), transform=ax.get_xaxis_transform(), linestyle="",
                marker="|", markersize=8, color=color, clip_on=False, label="_boundaries")


def _method_lines(ax, runs: pd.DataFrame, curves: pd.DataFrame, colors: dict[str, str], x: str, metric: str) -> None:
    """On ``ax``: per method of ``runs`` its mean line over finished seeds with a min-max band, its
    phase-boundary ticks, its diverged runs as ``x``, and the legend (a method without a finished
    seed gets a legend entry only)."""
    palette = [f"C{i}" for i in range(10)]
    extra: list = []
    drawn: dict = {}
    for k, (method, g) in enumerate(runs.groupby("method", sort=False)):
        color = colors.get(method, palette[k % len(palette)])
        done = g[g.status == "finished"]
        xs, mean, lo, hi = seed_band(curves[curves.run_id.isin(done.run_id)], metric, x)
        problems = g.status[g.status != "finished"].value_counts()
        label = f"{method} (n={len(done)}" + "".join(f", {n} {st}" for st, n in problems.items()) + ")"
        if len(xs):
            same = _same_as(xs, mean, drawn)
            ax.plot(xs, mean, color=color, label=label + (f", same curve as {same}" if same else ""),
                    **_style(k, len(xs)))
            drawn[method] = (xs, mean)
            if len(done) > 1:
                ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
            _boundary_ticks(ax, list(done.boundaries.iloc[0]) if x == "flops" else step_boundaries(
                done.phases.iloc[0]), k, color)
        else:  # no finished seed: the method still gets a legend entry, not a line
            extra.append((Line2D([], [], color=color, linestyle=""), label))
        for run_id in g.run_id[g.status == "diverged"]:
            points = curves[curves.run_id == run_id]
            points = points[np.isfinite(points[metric].astype(float))] if metric in points else points.iloc[:0]
            if len(points):
                ax.scatter([float(points[COLUMN[x]].iloc[-1])], [float(points[metric].iloc[-1])], marker="x",
                           color=color, zorder=3)
    handles, labels = ax.get_legend_handles_labels()
    handles += [h for h, _ in extra]
    labels += [lab for _, lab in extra]
    if any(ln.get_label() == "_boundaries" for ln in ax.get_lines()):
        handles.append(Line2D([], [], color="0.5", linestyle="", marker="|", markersize=8))
        labels.append("phase boundaries (ticks at the top)")
    ax.legend(handles, labels, fontsize="small")
    ax.set_xlabel(AXES[x])
    ax.grid(alpha=0.3)


def _teacher_panel(fig: Figure, ax, teacher_curves: pd.DataFrame, metric: str, x: str) -> None:
    """The teachers' own training on a panel of its own (its x axis would dwarf the students')."""
    panel = fig.add_subplot(1, 2, 2, sharey=ax)
    for tid, curve in teacher_curves.groupby("teacher_id", sort=False):
        xs, mean, _, _ = seed_band(curve, metric, x)
        if len(xs):
            panel.plot(xs, mean, color="0.4", linestyle=":", label=f"teacher {tid}")
    panel.set_xlabel(f"teacher's {AXES[x]}")
    panel.set_title("the teacher's own training", fontsize="medium")
    panel.grid(alpha=0.3)
    if panel.get_lines():
        panel.legend(fontsize="small")


def plot_task(runs: pd.DataFrame, curves: pd.DataFrame, teacher_curves: Optional[pd.DataFrame] = None,
              colors: Optional[dict[str, str]] = None, x: str = "flops", metric: Optional[str] = None) -> Figure:
    """The figure of one task's runs (rows of :meth:`kdbench.results.Results.runs`) from
    their ``curves`` (long form, :meth:`~kdbench.results.Results.curves`), against ``x``:
    ``flops`` (measured training FLOPs) or ``steps`` (student steps); of the task's metric,
    or of ``metric`` (a fidelity column: ``agreement`` or ``teacher_kl``).

    The first axes hold one mean line per method with a finished curve (each with its own dash
    pattern and marker; a curve identical to an earlier method's says so in its label), and per
    method with phases one row of short ticks along the top edge at its phase boundaries. With
    ``teacher_curves`` (long form, keyed by ``teacher_id``) a second panel, sharing the y axis,
    shows the teachers' own training, so the students' x axis is not stretched by it."""
    hib = FIDELITY.get(metric, bool(runs.higher_is_better.iloc[0]))
    metric = metric or runs.metric.iloc[0]
    fig = Figure(figsize=(6.4 if teacher_curves is None else 9.6, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1 if teacher_curves is None else 2, 1)
    _method_lines(ax, runs, curves, colors or {}, x, metric)
    ax.set_ylabel(metric_label(metric, hib))
    against = " (against the final teacher, evaluation cost)" if metric in FIDELITY else ""
    ax.set_title(f"{runs.task.iloc[0]}: mean over seeds, band min-max{against}", fontsize="medium")
    if teacher_curves is not None:
        _teacher_panel(fig, ax, teacher_curves, metric, x)
    return fig


def plot_by_teacher(runs: pd.DataFrame, curves: pd.DataFrame, colors: Optional[dict[str, str]] = None,
                    x: str = "flops") -> Optional[Figure]:
    """One task's curves split by teacher seed: a panel per teacher seed (sharing the y axis), each
    drawn as :func:`plot_task`'s first axes from that teacher's runs only, so a reader sees whether an
    ordering of the methods holds on every teacher, early and late. None for fewer than two teacher seeds."""
    seeds = sorted({int(t) for t in runs.teacher_seed.dropna()})
    if len(seeds) < 2:
        return None
    metric = runs.metric.iloc[0]
    hib = bool(runs.higher_is_better.iloc[0])
    fig = Figure(figsize=(4.8 * len(seeds), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    first = None
    for i, seed in enumerate(seeds):
        ax = fig.add_subplot(1, len(seeds), i + 1, sharey=first)
        first = first or ax
        _method_lines(ax, runs[runs.teacher_seed == seed], curves, colors or {}, x, metric)
        ax.set_title(f"teacher seed {seed}", fontsize="medium")
    first.set_ylabel(metric_label(metric, hib))
    fig.suptitle(f"{runs.task.iloc[0]} per teacher seed: mean over seeds, band min-max", fontsize="medium")
    return fig


def plot_tuning(t: TaskTuning, methods: list[str], colors: Optional[dict[str, str]] = None) -> Figure:
    """One task's sweeps: per method (in ``methods`` order), a strip of its trials' objectives on
    the dev seeds, the chosen trial circled; failed trials are counted in the method's label."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = colors or {}
    tuned = [m for m in methods if m in set(t.trials.method)]
    for i, method in enumerate(tuned):
        g = t.trials[(t.trials.method == method) & (t.trials.state == "complete")]
        offsets = np.linspace(-0.2, 0.2, len(g)) if len(g) > 1 else np.zeros(len(g))  # spread, deterministically
        ax.scatter(i + offsets, g.objective.astype(float), color=colors.get(method, f"C{i % 10}"), alpha=0.7, s=18)
        best = g[g.chosen]
        if len(best):
            ax.scatter(i + offsets[list(g.chosen).index(True)], best.objective.astype(float), s=90,
                       facecolors="none", edgecolors="black", linewidths=1.2, zorder=3)
    failed = t.trials[t.trials.state == "failed"].groupby("method").size()
    ax.set_xticks(range(len(tuned)), [f"{m}\n({failed[m]} failed)" if m in failed else m for m in tuned],
                  fontsize="small")
    if t.protocol["objective"] == "flops_to_target":
        ax.set_yscale("log")
    better = "lower" if not t.protocol.get("maximize", True) else "higher"
    ax.set_ylabel(f"{t.objective}, mean over dev seeds ({better} is better)")
    ax.set_title(f"{t.task}: {t.protocol['trials']} trials per method\non {dev_text(t.protocol)}; "
                 "circled: chosen", fontsize="medium")
    ax.grid(alpha=0.3, axis="y")
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` to ``path`` (atomically) in the format its suffix names."""
    # no timestamps in the files, so the same run folders give the same figures
    metadata = {"CreationDate": None} if path.suffix == ".pdf" else {"Software": None}
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix[1:], dpi=150, metadata=metadata))


def write_figures(results: Results, dest: Optional[Path] = None, teacher: bool = False,
                  formats: Iterable[str] = FORMATS, x: Optional[str] = None) -> list[Path]:
    """Write ``<dest>/<task>.<format>`` for every task of ``results`` (``dest`` defaults
    to the results folder's ``figures/``) against ``x`` (``flops`` or ``steps``; default:
    student steps for a task whose budget is in student steps, else FLOPs), for a task whose
    curves hold the parity probe's columns ``<task>-probe.<format>`` (:mod:`kdbench.results.probe_plots`),
    for a task run on two or more teacher seeds ``<task>-by-teacher.<format>`` (a panel per teacher seed),
    where runs measured their fidelity ``<task>-agreement.<format>`` and ``<task>-teacher_kl.<format>``,
    and ``tuning-<task>.<format>`` for a tuned task; return the paths written."""
    if x is not None and x not in AXES:
        raise UserError(f"--x: {x!r} is not an axis; allowed: {', '.join(AXES)}")
    runs, curves, trials = results.runs(), results.curves(), results.tuning()
    dest = Path(dest) if dest is not None else results.path / "figures"
    if runs.empty:
        return []
    methods = results.order("methods", sorted(set(runs.method)))
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}  # one colour per method across tasks
    all_teacher_curves = results.teacher_curves()
    paths = []
    for task in results.order("tasks", list(dict.fromkeys(runs.task))):
        g = runs[runs.task == task]
        g = g.iloc[sorted(range(len(g)), key=lambda i: methods.index(g.method.iloc[i]))]
        used = pd.concat([all_teacher_curves[all_teacher_curves.teacher_id == t]
                          for t in dict.fromkeys(g.teacher_id.dropna())] or [all_teacher_curves.iloc[:0]])
        by_steps = all(isinstance(b, dict) and b.get("student_steps") for b in g.budget_spec)
        axis = x or ("steps" if by_steps else "flops")
        figures = {task: plot_task(g, curves, used if teacher else None, colors, axis),
                   f"{task}-by-teacher": plot_by_teacher(g, curves, colors, axis),  # None: one teacher seed
                   f"{task}-probe": plot_probe(g, curves, used, axis)}  # None without probe columns
        measured = curves[curves.run_id.isin(g.run_id)]
        for column in FIDELITY:
            if column in measured and measured[column].notna().any():
                figures[f"{task}-{column}"] = plot_task(g, curves, None, colors, axis, metric=column)
        tuning = task_tuning(trials, task)
        if tuning is not None:
            figures[f"tuning-{task}"] = plot_tuning(tuning, methods, colors)
        for name, fig in figures.items():
            for fmt in formats if fig is not None else ():
                path = dest / f"{name}.{fmt}"
                save_figure(fig, path)
                paths.append(path)
    return paths
