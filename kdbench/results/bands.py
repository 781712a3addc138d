"""What every figure draws with: the x axes, the metric's label, and a band over seeds (mean line, min-max band)."""

from __future__ import annotations

import numpy as np
import pandas as pd

AXES = {"flops": "training FLOPs (measured)", "steps": "student steps"}  # x axis -> its label


COLUMN = {"flops": "flops", "steps": "step"}  # x axis -> the curves' column


def metric_label(metric: str, higher_is_better: bool) -> str:
    """The y axis label of a metric: its name and which way is better."""
    return f"{metric} ({'higher' if higher_is_better else 'lower'} is better)"


def seed_band(curves: pd.DataFrame, metric: str, x: str = "flops") -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                           np.ndarray]:
    """Mean, min and max of ``metric`` over several runs' curves (long form, keyed by the
    first column: ``run_id`` or ``teacher_id``) on the union of their ``x`` points (``flops``
    or ``steps``), each curve linearly interpolated inside its own range and absent outside it."""
    series, column = [], COLUMN[x]
    for _, curve in curves.groupby(curves.columns[0], sort=False):
        pts = curve[[column, metric]].astype(float) if metric in curve else pd.DataFrame()
        pts = pts[np.isfinite(pts[metric])].sort_values([column, metric]) if len(pts) else pts
        if len(pts):
            series.append(pts.to_numpy())
    if not series:
        empty = np.array([])
        return empty, empty, empty, empty
    x = np.unique(np.concatenate([s[:, 0] for s in series]))
    ys = np.full((len(series), len(x)), np.nan)
    for i, s in enumerate(series):
        inside = (x >= s[0, 0]) & (x <= s[-1, 0])
        ys[i, inside] = np.interp(x[inside], s[:, 0], s[:, 1])
    return x, np.nanmean(ys, axis=0), np.nanmin(ys, axis=0), np.nanmax(ys, axis=0)
