"""95% confidence intervals of a leaderboard mean, with teachers as a random factor.

A suite's runs are nested: student seeds within teacher seeds. With one teacher seed the
interval is Student-t over the seeds. With two or more it is Student-t over the per-teacher
means (T teacher seeds, T - 1 degrees of freedom): each teacher's mean carries both its own
students' spread and the teacher's effect, so the interval accounts for the nesting, and with a
balanced design it is the exact interval of the two-level random-effects model. (A two-stage
bootstrap, teachers then seeds, was tried first: with the 2-5 teacher seeds a CPU suite affords
it cannot reach beyond the per-teacher means and is far too narrow, about 60% of this width
with 5 teachers.)
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

T_INTERVAL = "t"
TEACHER_MEANS = "teacher means"


def t_quantile_975(df: int) -> float:
    """Two-sided 95% Student-t quantile: exact table to 30 degrees of freedom, then
    the Cornish-Fisher expansion around the normal quantile (error < 1e-4)."""
    table = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
             2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
             2.045, 2.042)
    if df < 1:
        return math.nan
    if df <= len(table):
        return table[df - 1]
    z = 1.959963985
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def t_interval(values: np.ndarray) -> tuple[float, float]:
    """The 95% Student-t interval of the mean of ``values`` (NaN with fewer than two)."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean, half = float(values.mean()), t_quantile_975(n - 1) * float(values.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def interval(values, teacher_seeds) -> tuple[float, float, Optional[str]]:
    """The 95% interval of the mean of ``values`` (NaN dropped; ``teacher_seeds`` gives each
    value's teacher seed, position by position) and how it was computed: with two or more teacher
    seeds, :func:`t_interval` over the per-teacher means (``teacher means``); else over the values
    (``t``); ``(nan, nan, None)`` with fewer than two values."""
    values = pd.Series(np.asarray(values, dtype=float))
    keep = values.notna().to_numpy()
    values, teacher_seeds = values[keep], np.asarray(teacher_seeds)[keep]
    if len(values) < 2:
        return math.nan, math.nan, None
    means = values.groupby(teacher_seeds, sort=True).mean().to_numpy()
    if len(means) >= 2:
        return (*t_interval(means), TEACHER_MEANS)
    return (*t_interval(values.to_numpy()), T_INTERVAL)
