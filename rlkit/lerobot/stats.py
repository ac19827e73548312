"""Per-feature statistics in the LeRobot layout (``min max mean std count q01 q10 q50 q90 q99``).

Shapes follow lerobot: a vector feature ``(N, D)`` gives stats of shape ``(D,)``, a scalar
feature ``(N,)`` gives ``(1,)``, ``count`` is always ``(1,)`` int64. Everything else is float64.
``std`` is the population standard deviation (``ddof=0``), as lerobot computes it.

Quantiles use numpy's default (linear interpolation) definition. They cannot be pooled exactly
from per-group summaries, so :func:`aggregate_stats` returns an envelope for them (usually wider
than the true quantile; not guaranteed for groups of a few frames).
"""

from __future__ import annotations

import numpy as np

QUANTILES: dict[str, float] = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
"""Quantile stat names written by lerobot v3.0 and the probability each one stands for."""

BASIC_STATS: tuple[str, ...] = ("min", "max", "mean", "std", "count")

# Upper bound on the float64 elements gathered at once for the batched per-episode quantiles
# (4 Mi elements = 32 MiB): small blocks stay cheap to allocate and cache friendly.
_QUANTILE_BATCH_ELEMENTS = 4 * 1024 * 1024
_TRANSPOSE_ROWS = 8192


def _as_2d(values: np.ndarray) -> np.ndarray:
    """Check ``values`` is numeric/bool with a frame axis; return it as ``(N, ...)``, 1-D input
    as ``(N, 1)``. The dtype is kept: callers cast block by block (see :func:`_work_dtype`)."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"values must be numeric or bool, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError("values must have a leading frame dimension, got a scalar")
    return arr[:, None] if arr.ndim == 1 else arr


def _lerp_sorted(s: np.ndarray, probs: list[float]) -> np.ndarray:
    """Quantiles of data sorted along its last axis, numpy's default ``linear`` method.

    Returns an array of shape ``(len(probs), *s.shape[:-1])``.
    """
    n = s.shape[-1]
    out = np.empty((len(probs), *s.shape[:-1]), dtype=np.float64)
    for i, p in enumerate(probs):
        virtual = p * (n - 1)
        lo = int(np.floor(virtual))
        hi = min(lo + 1, n - 1)
        gamma = virtual - lo
        a, b = s[..., lo].astype(np.float64), s[..., hi].astype(np.float64)
        # same two-sided lerp as numpy, so results match np.quantile bit for bit in practice
        out[i] = b - (b - a) * (1 - gamma) if gamma >= 0.5 else a + (b - a) * gamma
    return out


def _std(s: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Population std (ddof=0) over the last axis, two-pass for accuracy.

    Works through ~1 Mi elements at a time so the float64 deviations stay in cache (2.8x faster
    than one pass over a wide block); each row is reduced exactly as in one pass.
    """
    length = s.shape[-1]
    rows, means = s.reshape(-1, length), mean.reshape(-1)
    out = np.empty(len(rows), dtype=np.float64)
    step = max(1, (1 << 20) // max(length, 1))
    for lo in range(0, len(rows), step):
        dev = rows[lo : lo + step] - means[lo : lo + step, None]
        out[lo : lo + step] = np.mean(np.square(dev, out=dev), axis=-1)
    return np.sqrt(out).reshape(mean.shape)


def _stats_of_sorted(s: np.ndarray, quantiles: bool) -> dict[str, np.ndarray]:
    """Stats over the last axis of ``s`` (sorted along that axis if ``quantiles``), in float64
    whatever the dtype of ``s`` (float32 or float64)."""
    mean = s.mean(axis=-1, dtype=np.float64)
    out = {
        "min": (s[..., 0] if quantiles else s.min(axis=-1)).astype(np.float64),
        "max": (s[..., -1] if quantiles else s.max(axis=-1)).astype(np.float64),
        "mean": mean,
        "std": _std(s, mean),
    }
    if quantiles:
        qs = _lerp_sorted(s, list(QUANTILES.values()))
        for i, name in enumerate(QUANTILES):
            out[name] = qs[i]
    return out


def _work_dtype(arr: np.ndarray) -> type:
    """dtype to sort in: float32 data stays float32 (the order and every value are the same in
    float64, and the sort runs ~1.8x faster); everything else is sorted as float64."""
    return np.float32 if arr.dtype in (np.float32, np.float16) else np.float64


def compute_stats(
    values: np.ndarray | list[np.ndarray], *, quantiles: bool = True
) -> dict[str, np.ndarray]:
    """Compute lerobot statistics of one feature over its first (frame) axis.

    Args:
        values: ``(N,)`` or ``(N, D)`` numeric array (bool is cast to float). Higher-rank
            input ``(N, *S)`` is reduced over axis 0 only, giving stats of shape ``S``. A list
            of such arrays (same trailing shape and dtype) is treated as their concatenation
            along axis 0, without building it.
        quantiles: Also compute ``q01 q10 q50 q90 q99`` (exact, numpy's linear method).

    Returns:
        Dict with ``min max mean std`` (float64, shape ``(D,)``; ``(1,)`` for 1-D input),
        ``count`` (int64, shape ``(1,)``) and, if requested, the quantiles (same shape as mean).

    Raises:
        ValueError: If ``values`` is empty or not numeric, or list parts do not match.
    """
    arrs = [_as_2d(v) for v in values] if isinstance(values, (list, tuple)) else [_as_2d(values)]
    if not arrs or any(a.shape[1:] != arrs[0].shape[1:] or a.dtype != arrs[0].dtype for a in arrs):
        raise ValueError(
            "values must be an array or a non-empty list of arrays with the same trailing shape "
            f"and dtype, got {[(a.shape, str(a.dtype)) for a in arrs]}"
        )
    n = sum(a.shape[0] for a in arrs)
    if n == 0:
        raise ValueError("values must contain at least one frame, got 0")
    feat_shape = arrs[0].shape[1:]
    flats = [a.reshape(a.shape[0], -1) for a in arrs]
    width = flats[0].shape[1]
    starts = np.cumsum([0] + [f.shape[0] for f in flats])
    parts: list[dict[str, np.ndarray]] = []
    # Work on a few columns at a time, transposed to contiguous rows: sorting and
    # reducing along a contiguous axis is several times faster than along axis 0, and the
    # temporaries stay small (~_QUANTILE_BATCH_ELEMENTS).
    cols_per_block = max(1, _QUANTILE_BATCH_ELEMENTS // n)
    for j in range(0, width, cols_per_block):
        block = np.empty((min(cols_per_block, width - j), n), dtype=_work_dtype(arrs[0]))
        for flat, lo, hi in zip(flats, starts[:-1], starts[1:], strict=True):
            # Transposed in slabs of rows: one strided copy of the whole part thrashes the
            # cache (3.5x slower for a million rows of 21 floats).
            for r in range(0, hi - lo, _TRANSPOSE_ROWS):
                rows = flat[r : r + _TRANSPOSE_ROWS, j : j + cols_per_block]
                block[:, lo + r : lo + r + len(rows)] = rows.T
        if quantiles:
            block.sort(axis=-1)
        parts.append(_stats_of_sorted(block, quantiles))
    out = {k: np.concatenate([p[k] for p in parts]).reshape(feat_shape) for k in parts[0]}
    out["count"] = np.array([n], dtype=np.int64)
    return out


def _check_bounds(episode_bounds: np.ndarray, n: int) -> np.ndarray:
    b = np.asarray(episode_bounds)
    if b.ndim != 1 or b.size < 2 or b.dtype.kind not in "iu":
        raise ValueError(
            f"episode_bounds must be a 1-D integer array of E+1 row offsets, got shape {b.shape} "
            f"dtype {b.dtype}"
        )
    b = b.astype(np.int64)
    if b[0] != 0 or b[-1] != n:
        raise ValueError(f"episode_bounds must start at 0 and end at N={n}, got {b[0]}..{b[-1]}")
    if np.any(np.diff(b) <= 0):
        bad = int(np.flatnonzero(np.diff(b) <= 0)[0])
        raise ValueError(
            f"episode_bounds must be strictly increasing (no empty episodes), "
            f"got b[{bad}]={b[bad]} >= b[{bad + 1}]={b[bad + 1]}"
        )
    return b


def episode_stats_arrays(
    values: np.ndarray, episode_bounds: np.ndarray, *, quantiles: bool = True
) -> dict[str, np.ndarray]:
    """Per-episode statistics stacked into arrays of shape ``(E, D)`` (``count``: ``(E, 1)``).

    Episode ``i``'s stats are those :func:`compute_stats` gives for rows ``[b[i], b[i+1])``,
    computed for all episodes at once; the writer stores them as the episodes metadata's
    ``stats/{feature}/{stat}`` columns.

    Args:
        values: ``(N,)`` or ``(N, D)`` numeric array.
        episode_bounds: E+1 int row offsets; episode ``i`` is rows ``[b[i], b[i+1])``.
        quantiles: Also compute the quantile stats.

    Returns:
        Dict stat name -> array with a leading episode axis.
    """
    x = _as_2d(values)
    b = _check_bounds(episode_bounds, x.shape[0])
    x = x.reshape(x.shape[0], -1)
    starts, lengths = b[:-1], np.diff(b)
    n_eps, width = len(starts), x.shape[1]
    if not quantiles:
        x = x.astype(np.float64, copy=False)
        lens = lengths[:, None].astype(np.float64)
        mean = np.add.reduceat(x, starts, axis=0) / lens
        dev = x - np.repeat(mean, lengths, axis=0)
        return {
            "min": np.minimum.reduceat(x, starts, axis=0),
            "max": np.maximum.reduceat(x, starts, axis=0),
            "mean": mean,
            "std": np.sqrt(np.add.reduceat(dev * dev, starts, axis=0) / lens),
            "count": lengths[:, None].astype(np.int64),
        }
    names = [*BASIC_STATS[:4], *QUANTILES]
    out = {k: np.empty((n_eps, width), dtype=np.float64) for k in names}
    # Episodes of equal length are stacked into one (k, D, L) block (L contiguous) and sorted
    # once; min/max/quantiles then come from the sorted rows. Recorded datasets usually share
    # a handful of lengths, so this runs a few numpy calls per block, not per episode.
    for length in np.unique(lengths).tolist():
        eps = np.flatnonzero(lengths == length)
        per_batch = max(1, _QUANTILE_BATCH_ELEMENTS // (length * width))
        for lo in range(0, len(eps), per_batch):
            sel = eps[lo : lo + per_batch]
            k, s0 = len(sel), int(starts[sel[0]])
            if np.all(starts[sel] == s0 + length * np.arange(k)):  # adjacent: a view suffices
                src = x[s0 : s0 + k * length].reshape(k, length, width)
            else:
                src = x[starts[sel][:, None] + np.arange(length)[None, :]]
            block = np.empty((k, width, length), dtype=_work_dtype(x))
            block[...] = src.transpose(0, 2, 1)
            block.sort(axis=-1)
            for name, value in _stats_of_sorted(block, True).items():
                out[name][sel] = value
    out["count"] = lengths[:, None].astype(np.int64)
    return out


def aggregate_stats(groups: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Pool the statistics of several groups (episodes, datasets) of one feature.

    ``N = sum n_i``, ``mean = sum n_i mu_i / N`` and
    ``var = sum n_i (sigma_i^2 + (mu_i - mean)^2) / N`` (the between-group term makes this exact
    for population variance). ``min``/``max`` are element-wise, ``count`` is summed.

    Quantiles cannot be pooled exactly. They are **approximate**: an envelope, the minimum
    over groups for ``q <= 50`` and the maximum for ``q > 50``, so normalisation ranges derived
    from them are usually wider than the data's. With linear interpolation inside groups of a
    few frames it can fall inside the true quantile, so recompute from the data when exact
    values matter (the merger does, by default).
    Works for any stat shape, including image stats ``(3, 1, 1)``.

    Args:
        groups: One stats dict per group, each with at least ``mean std count`` (and
            optionally ``min max`` and quantiles); stats missing from some group are dropped.

    Returns:
        The pooled stats dict (float64; ``count`` int64 shape ``(1,)``).

    Raises:
        ValueError: If ``groups`` is empty, a group lacks ``mean``/``std``/``count`` or the
            total count is 0.
    """
    if not groups:
        raise ValueError("aggregate_stats needs at least one group, got an empty list")
    for i, g in enumerate(groups):
        missing = [k for k in ("mean", "std", "count") if k not in g]
        if missing:
            raise ValueError(f"group {i} lacks {missing}; every group needs mean, std and count")
    common = set.intersection(*(set(g) for g in groups))
    stacked = {
        name: np.stack([np.asarray(g[name], dtype=np.float64) for g in groups])
        for name in common
        if name != "count"
    }
    stacked["count"] = np.array([float(np.asarray(g["count"]).reshape(-1)[0]) for g in groups])
    return aggregate_stacked(stacked)


def aggregate_stacked(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`aggregate_stats` of groups given stacked: stat -> array with a leading group
    axis (``count``: ``(G,)`` or ``(G, 1)``), as :func:`episode_stats_arrays` returns the
    stats of E episodes.

    Raises:
        ValueError: If ``mean``/``std``/``count`` is missing or the total count is 0.
    """
    missing = [k for k in ("mean", "std", "count") if k not in stats]
    if missing:
        raise ValueError(f"stats lack {missing}; pooling needs mean, std and count")
    counts = np.asarray(stats["count"], dtype=np.float64).reshape(len(stats["count"]), -1)[:, 0]
    total = counts.sum()
    if total <= 0:
        raise ValueError(f"total count must be > 0, got {total}")
    means = np.asarray(stats["mean"], dtype=np.float64)
    stds = np.asarray(stats["std"], dtype=np.float64)
    w = counts.reshape((-1,) + (1,) * (means.ndim - 1))
    mean = (w * means).sum(axis=0) / total
    var = (w * (stds**2 + (means - mean) ** 2)).sum(axis=0) / total
    out: dict[str, np.ndarray] = {}
    if "min" in stats:
        out["min"] = np.min(np.asarray(stats["min"], np.float64), axis=0)
    if "max" in stats:
        out["max"] = np.max(np.asarray(stats["max"], np.float64), axis=0)
    out["mean"] = mean
    out["std"] = np.sqrt(np.maximum(var, 0.0))
    out["count"] = np.array([int(round(total))], dtype=np.int64)
    for name, p in QUANTILES.items():
        if name in stats:
            stacked = np.asarray(stats[name], np.float64)
            out[name] = stacked.min(axis=0) if p <= 0.5 else stacked.max(axis=0)
    return out
