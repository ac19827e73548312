"""Figures across training seeds: mean, interquartile mean and a 95 % bootstrap confidence
interval, as Agarwal et al. (2021, "Deep RL at the Edge of the Statistical Precipice")
recommend for a handful of runs.

One task (the racing env) makes their *stratified* bootstrap the plain bootstrap over runs:
resample the seeds with replacement, recompute the statistic, take the 2.5 and 97.5
percentiles. The resampling generator is seeded, so the same runs give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["STATISTICS", "bootstrap_ci", "iqm", "summarize"]


def iqm(x: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % of the values (as ``rliable`` and
    ``scipy.stats.trim_mean(x, 0.25)``: ``floor(n / 4)`` values cut at each end)."""
    x = np.sort(np.asarray(x, dtype=float))
    cut = len(x) // 4
    return float(x[cut : len(x) - cut].mean())


#: The statistics :func:`summarize` reports (``median`` for times, which may be infinite).
STATISTICS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda x: float(np.mean(x)),
    "iqm": iqm,
    "median": lambda x: float(np.median(x)),
}


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], float],
    *,
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (one per run)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(resamples, len(x)))
    stats = np.array([statistic(row) for row in x[idx]])
    tail = 100 * (1 - level) / 2
    # the outer neighbours, not an interpolation: never narrower, and defined when the
    # statistic is infinite in some resamples (a run that never reached a goal)
    low = np.percentile(stats, tail, method="lower")
    high = np.percentile(stats, 100 - tail, method="higher")
    return float(low), float(high)


def summarize(values: Sequence[float | None], statistic: str = "mean") -> dict[str, Any]:
    """``values`` (one per seed; ``None`` = the run never got there, counted as +inf) ->
    mean, IQM, median, the 95 % bootstrap CI of ``statistic``, n and the values (a statistic
    that a never-reached run makes infinite is saved as null)."""
    x = np.array([math.inf if v is None else float(v) for v in values], dtype=float)
    out: dict[str, Any] = {name: fn(x) for name, fn in STATISTICS.items()}  # inf: JSON null
    low, high = bootstrap_ci(x, STATISTICS[statistic])
    out.update(statistic=statistic, ci_low=low, ci_high=high, n=len(x), values=list(values))
    return out
