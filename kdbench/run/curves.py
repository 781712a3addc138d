"""A run's learning curve (a list of points: step, samples, FLOPs, phase, metrics) and the
numbers read off it: the area under it, and the FLOPs it took to reach a target."""

from __future__ import annotations

import math
from typing import Optional


def flops_to_target(curve: list[dict], metric: str, target: Optional[float], higher_is_better: bool) -> float:
    """FLOPs at the first curve point whose ``metric`` reaches ``target`` (NaN if none does)."""
    if target is None:
        return math.nan
    for point in curve:
        v = point.get(metric)
        if isinstance(v, (int, float)) and math.isfinite(v) and (v >= target if higher_is_better else v <= target):
            return float(point["flops"])
    return math.nan


def curve_auc(curve: list[dict], metric: str) -> float:
    """Area under ``metric`` against FLOPs (trapezoids) divided by the FLOPs spanned: the
    curve's mean metric over training, in the metric's units. NaN with fewer than two points."""
    pts = [(float(p["flops"]), float(p[metric])) for p in curve
           if isinstance(p.get(metric), (int, float)) and math.isfinite(p[metric]) and p.get("flops") is not None]
    if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
        return math.nan
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(pts, pts[1:]))
    return area / (pts[-1][0] - pts[0][0])
