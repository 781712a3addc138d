"""95% confidence intervals of a leaderboard mean, with teachers as a random factor.

A suite's runs are nested: student seeds within teacher seeds. With one teacher seed the
interval is Student-t over the seeds; with two or more it is a two-stage percentile
bootstrap (resample the teacher seeds with replacement, then the student seeds with
replacement within each drawn teacher, and take the pooled mean), so the spread between
teachers widens the interval as it should. The bootstrap draws from a fixed RNG seed: the
same folder gives the same table.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

RESAMPLES = 2000
BOOTSTRAP_SEED = 0
T_INTERVAL = "t"
NESTED_BOOTSTRAP = "nested bootstrap"


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


def nested_bootstrap(groups: list[np.ndarray], resamples: int = RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the pooled mean over ``resamples`` two-stage
    resamples of ``groups`` (one array of values per teacher seed): the teachers drawn with
    replacement, then within each drawn teacher its values drawn with replacement."""
    sizes = np.array([len(g) for g in groups])
    padded = np.zeros((len(groups), sizes.max()))
    for i, g in enumerate(groups):
        padded[i, :len(g)] = g
    rng = np.random.default_rng(seed)
    teachers = rng.integers(0, len(groups), size=(resamples, len(groups)))
    n = sizes[teachers][..., None]  # (resamples, teachers, 1): the drawn teacher's seed count
    picks = np.floor(rng.random((resamples, len(groups), sizes.max())) * n).astype(int)
    used = np.arange(sizes.max()) < n  # a teacher with fewer seeds draws only as many
    drawn = np.where(used, padded[teachers[..., None], picks], 0.0)
    means = drawn.sum(axis=(1, 2)) / used.sum(axis=(1, 2))
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def interval(values, teacher_seeds) -> tuple[float, float, Optional[str]]:
    """The 95% interval of the mean of ``values`` (NaN dropped; ``teacher_seeds`` gives each
    value's teacher seed, position by position) and how it was computed: :func:`nested_bootstrap`
    over the teacher seeds when there are two or more, else :func:`t_interval` over the values
    (``(nan, nan, None)`` with fewer than two values)."""
    values = pd.Series(np.asarray(values, dtype=float))
    keep = values.notna().to_numpy()
    values, teacher_seeds = values[keep], np.asarray(teacher_seeds)[keep]
    if len(values) < 2:
        return math.nan, math.nan, None
    groups = [g.to_numpy() for _, g in values.groupby(teacher_seeds, sort=True)]
    if len(groups) >= 2:
        return (*nested_bootstrap(groups), NESTED_BOOTSTRAP)
    return (*t_interval(values.to_numpy()), T_INTERVAL)
