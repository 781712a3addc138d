"""The probe's figure: how each model's output correlates with the support's monomials over training.

For a task run with ``probe_degree`` (parity tasks; :mod:`kdbench.tasks.monomials`)
every curve point holds ``corr:<monomial>`` columns. The figure has one panel per
method (the mean over its finished seeds) and one for the teacher's own training,
each drawing the absolute correlation with every monomial against student steps or
FLOPs, coloured by degree, the full parity in black: the papers' picture of the
implicit curriculum (low-degree correlations rise before the parity is learned).
``kdbench plot`` (and ``kdbench run``) write it as ``<task>-probe.png`` / ``.pdf``.
"""

from __future__ import annotations

from typing import Optional

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from kdbench.results.bands import AXES, seed_band
from kdbench.tasks.monomials import PREFIX, monomial_degree


def probe_columns(curves: pd.DataFrame) -> list[str]:
    """The ``corr:`` columns of ``curves`` that hold a value, lowest degree first."""
    cols = [c for c in curves.columns if str(c).startswith(PREFIX) and curves[c].notna().any()]
    return sorted(cols, key=lambda c: (monomial_degree(c), c))


def _panel(ax, curves: pd.DataFrame, columns: list[str], x: str, title: str) -> None:
    """One model's absolute correlations (mean over the runs in ``curves``) against ``x``."""
    top = max(monomial_degree(c) for c in columns)
    magnitudes = curves.copy()
    magnitudes[columns] = magnitudes[columns].astype(float).abs()
    for column in columns:
        xs, mean, _, _ = seed_band(magnitudes, column, x)
        degree = monomial_degree(column)
        if degree == top:
            ax.plot(xs, mean, color="black", linewidth=2)
        else:
            ax.plot(xs, mean, color=f"C{degree - 1}", linewidth=1, alpha=0.8)
    ax.set_title(title, fontsize="small")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def plot_probe(runs: pd.DataFrame, curves: pd.DataFrame, teacher_curves: Optional[pd.DataFrame],
               x: str = "flops") -> Optional[Figure]:
    """The probe figure of one task's runs (rows of :meth:`kdbench.results.Results.runs`, whose
    ``curves`` are in long form) and its teachers' curves; None when no curve has probe columns."""
    done = runs[runs.status == "finished"]
    task_curves = curves[curves.run_id.isin(done.run_id)]
    teacher_curves = teacher_curves if teacher_curves is not None else pd.DataFrame()
    columns = probe_columns(task_curves) or probe_columns(teacher_curves)
    if not columns:
        return None
    panels = [(f"{method} (n={len(g)})", task_curves[task_curves.run_id.isin(g.run_id)])
              for method, g in done.groupby("method", sort=False)]
    if len(teacher_curves):
        panels += [(f"teacher {tid} (its own training)", curve)
                   for tid, curve in teacher_curves.groupby("teacher_id", sort=False)]
    panels = [(title, c) for title, c in panels if set(columns) <= set(probe_columns(c))]
    if not panels:
        return None
    fig = Figure(figsize=(3.2 * min(len(panels), 3), 2.8 * -(-len(panels) // 3) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(-(-len(panels) // 3), min(len(panels), 3), squeeze=False, sharey=True).ravel()
    for ax, (title, curve) in zip(axes, panels):
        _panel(ax, curve, columns, x, title)
        ax.set_xlabel(AXES[x], fontsize="small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    top = max(monomial_degree(c) for c in columns)
    degrees = sorted({monomial_degree(c) for c in columns} - {top})
    handles = [Line2D([], [], color=f"C{d - 1}") for d in degrees] + [Line2D([], [], color="black", linewidth=2)]
    labels = [f"degree {d} ({sum(monomial_degree(c) == d for c in columns)})" for d in degrees]
    fig.legend(handles, labels + [f"parity (degree {top})"], loc="outside lower center", ncol=len(handles),
               fontsize="small")
    fig.suptitle(f"{runs.task.iloc[0]}: |correlation| of the output margin with the support's monomials "
                 "(mean over seeds)", fontsize="medium")
    return fig
