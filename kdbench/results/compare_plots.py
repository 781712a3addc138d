"""Figures of a :class:`kdbench.results.compare.Comparison`: per task, every folder's curves on one axes.

A colour per row label (method), a line style per folder; each line is the mean over that
folder's finished runs of the row (:func:`kdbench.results.bands.seed_band`, as the leaderboard's
figures draw it), against measured training FLOPs. Written as ``<task>-compare.png`` and ``.pdf``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from kdbench.results.bands import AXES, metric_label, seed_band
from kdbench.results.compare import Comparison
from kdbench.results.plots import FORMATS, save_figure

STYLES = ("-", "--", ":", "-.")  # folder i draws with STYLES[i % 4]


def plot_compare(cmp: Comparison, task: str) -> Figure:
    """One task's figure: per folder and row label with a finished run, the mean curve of its
    finished runs; legend: the row labels' colours, then the folders' line styles."""
    metric, hib = cmp.tasks[task]
    methods = list(dict.fromkeys(cmp.frame.method[cmp.frame.task == task]))
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn: set[str] = set()
    for i, folder in enumerate(cmp.folders):
        runs = folder.runs[(folder.runs.task == task) & (folder.runs.status == "finished")]
        curves = folder.results.curves()
        for method in methods:
            xs, mean, _, _ = seed_band(curves[curves.run_id.isin(runs.run_id[runs.method == method])], metric)
            if len(xs):
                ax.plot(xs, mean, color=colors[method], linestyle=STYLES[i % len(STYLES)])
                drawn.add(method)
    handles = [Line2D([], [], color=colors[m]) for m in methods if m in drawn]
    labels = [m for m in methods if m in drawn]
    handles += [Line2D([], [], color="0.3", linestyle=STYLES[i % len(STYLES)]) for i in range(len(cmp.folders))]
    labels += [f.label + (" (reference)" if f.label == cmp.reference else "") for f in cmp.folders]
    ax.legend(handles, labels, fontsize="small")
    ax.set_xlabel(AXES["flops"])
    ax.set_ylabel(metric_label(metric, hib))
    ax.set_title(f"{task}: mean over finished seeds; colour: method, line: folder", fontsize="medium")
    ax.grid(alpha=0.3)
    return fig


def write_compare_figures(cmp: Comparison, dest: Path, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write ``<dest>/<task>-compare.<format>`` for every task of ``cmp``; return the paths written."""
    paths = []
    for task in cmp.tasks:
        fig = plot_compare(cmp, task)
        for fmt in formats:
            path = Path(dest) / f"{task}-compare.{fmt}"
            save_figure(fig, path)
            paths.append(path)
    return paths
