"""A batch of whole episodes handed to :class:`~rlkit.lerobot.writer.DatasetWriter`: the
checks it must pass before anything of it is written, and the index columns derived from it.

A batch is a dict column -> array with a first (frame) axis: ``(N,)`` scalars or ``(N, D)``
vectors, numeric or bool; ``episode_index`` (int, contiguous per episode, numbered on from
the previous batch) is required; ``frame_index``, ``index``, ``timestamp`` and ``task_index``
are derived when absent and checked when given. Errors name the column, the frame and the fix.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from rlkit.lerobot.layout import TIMESTAMP_TOL_S, LeRobotFormatError
from rlkit.lerobot.stats import BASIC_STATS, QUANTILES


def check_options(
    fps: int, tasks: list[str], data_files_size_in_mb: float, chunks_size: int
) -> None:
    if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or fps <= 0:
        raise LeRobotFormatError(f"fps must be a positive int, got {fps!r}")
    if not 0 < data_files_size_in_mb < float("inf"):
        raise LeRobotFormatError(
            f"data_files_size_in_mb must be a finite number > 0, got {data_files_size_in_mb}"
        )
    if (
        isinstance(chunks_size, bool)
        or not isinstance(chunks_size, (int, np.integer))
        or chunks_size < 1
    ):
        raise LeRobotFormatError(f"chunks_size must be an int >= 1, got {chunks_size!r}")
    if not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise LeRobotFormatError(
            f"tasks must be a non-empty list of non-empty strings, got {tasks!r}"
        )
    if len(set(tasks)) != len(tasks):
        dup = next(t for t in tasks if tasks.count(t) > 1)
        raise LeRobotFormatError(
            f"tasks must be unique (row order = task_index), got {dup!r} twice"
        )


def check_batch(
    data: dict[str, np.ndarray],
    fps: int,
    tasks: list[str],
    feature_names: dict[str, list[str]],
    first_episode: int = 0,
    first_frame: int = 0,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Check a batch of whole episodes; return the arrays with index columns added and the
    episode bounds (row offsets within the batch). The batch continues a dataset that already
    has ``first_episode`` episodes and ``first_frame`` frames."""
    arrays = _check_columns(data)
    bounds = _episode_bounds(arrays, first_episode)
    _derive_index_columns(arrays, bounds, fps, first_frame)
    _check_task_index(arrays, tasks)
    for key, names in feature_names.items():
        if key not in arrays:
            close = difflib.get_close_matches(key, list(arrays), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise LeRobotFormatError(f"feature_names has key {key!r} which is not in data{hint}")
        width = 1 if arrays[key].ndim == 1 else arrays[key].shape[1]
        if not isinstance(names, (list, tuple)) or len(names) != width:
            raise LeRobotFormatError(
                f"feature_names[{key!r}] must be a list of {width} names (one per dimension), "
                f"got {names!r}"
            )
    return arrays, bounds


def _check_columns(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Names, dtypes, shapes and finiteness of the columns; ``(N, 1)`` becomes ``(N,)``."""
    if not data:
        raise LeRobotFormatError("data is empty; pass at least 'episode_index' and one feature")
    if "episode_index" not in data:
        close = difflib.get_close_matches("episode_index", list(data), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise LeRobotFormatError(
            f"data must contain 'episode_index' ((N,) int, 0..E-1 contiguous per episode), "
            f"got keys {sorted(data)}{hint}"
        )
    arrays: dict[str, np.ndarray] = {}
    n = None
    for key, value in data.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise LeRobotFormatError(
                f"feature names must be non-empty strings without '/', got {key!r}"
            )
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise LeRobotFormatError(
                f"data[{key!r}] must be numeric or bool, got dtype {arr.dtype}; "
                "images/videos/strings are not supported by write_dataset"
            )
        if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] == 0):
            raise LeRobotFormatError(
                f"data[{key!r}] must have shape (N,) or (N, D) with D >= 1, got {arr.shape}"
            )
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]  # lerobot stores shape [1] as a plain scalar column
        if n is None:
            n, first = arr.shape[0], key
        elif arr.shape[0] != n:
            raise LeRobotFormatError(
                f"all columns need the same number of frames: data[{first!r}] has {n}, "
                f"data[{key!r}] has {arr.shape[0]}"
            )
        if arr.dtype.kind == "f":
            finite = np.isfinite(arr)
            if not finite.all():
                row = int(np.flatnonzero(~finite.reshape(n, -1).all(axis=1))[0])
                raise LeRobotFormatError(
                    f"data[{key!r}] contains {int((~finite).sum())} NaN/inf values (first at "
                    f"frame {row}); clean or drop those frames before writing"
                )
        arrays[key] = arr
    if n == 0:
        raise LeRobotFormatError("data has 0 frames; a dataset needs at least one frame")
    return arrays


def _episode_bounds(arrays: dict[str, np.ndarray], first_episode: int) -> np.ndarray:
    """``episode_index``: integer, 1-D, starts at ``first_episode``, steps by 0 or +1
    (contiguous, sorted, no gaps); stored back as int64. Returns the E+1 row offsets."""
    ep = arrays["episode_index"]
    if ep.ndim != 1 or ep.dtype.kind not in "iu":
        raise LeRobotFormatError(
            f"data['episode_index'] must be a 1-D int array, got {ep.shape} {ep.dtype}"
        )
    ep = ep.astype(np.int64)
    steps = np.diff(ep)
    if ep[0] != first_episode or np.any((steps != 0) & (steps != 1)):
        bad = (
            0 if ep[0] != first_episode else int(np.flatnonzero((steps != 0) & (steps != 1))[0]) + 1
        )
        prev = "start" if bad == 0 else f"{ep[bad - 1]} at frame {bad - 1}"
        raise LeRobotFormatError(
            f"data['episode_index'] must be contiguous and sorted from {first_episode} (each "
            f"episode's frames together, episodes numbered in order); frame {bad} has "
            f"{ep[bad]} after {prev}"
        )
    arrays["episode_index"] = ep
    return np.concatenate([[0], np.flatnonzero(steps) + 1, [len(ep)]]).astype(np.int64)


def _derive_index_columns(
    arrays: dict[str, np.ndarray], bounds: np.ndarray, fps: int, first_frame: int
) -> None:
    """Add ``frame_index``, ``index`` and ``timestamp`` when absent; check them when given."""
    n, ep = int(bounds[-1]), arrays["episode_index"]
    lengths = np.diff(bounds)
    frame_index = np.arange(n, dtype=np.int64) - np.repeat(bounds[:-1], lengths)
    derived = {
        "frame_index": frame_index,
        "index": np.arange(first_frame, first_frame + n, dtype=np.int64),
        "timestamp": (frame_index / fps).astype(np.float32),
    }
    for key, expected in derived.items():
        if key not in arrays:
            arrays[key] = expected
            continue
        got = arrays[key]
        if got.ndim != 1:
            raise LeRobotFormatError(f"data[{key!r}] must be 1-D, got shape {got.shape}")
        if key == "timestamp":
            bad_mask = np.abs(got.astype(np.float64) - frame_index / fps) > TIMESTAMP_TOL_S
            fix = f"frame_index / fps (fps={fps})"
        else:
            if got.dtype.kind not in "iu":
                raise LeRobotFormatError(
                    f"data[{key!r}] must be an int array, got dtype {got.dtype}"
                )
            bad_mask = got != expected
            fix = "0.. per episode" if key == "frame_index" else "0..N-1 in dataset row order"
        if bad_mask.any():
            row = int(np.flatnonzero(bad_mask)[0])
            raise LeRobotFormatError(
                f"data[{key!r}] is inconsistent at frame {row} (episode {ep[row]}): got "
                f"{got[row]}, expected {expected[row]} ({fix}); fix it or leave the column out "
                "to have it derived"
            )
        arrays[key] = got.astype(expected.dtype)


def _check_task_index(arrays: dict[str, np.ndarray], tasks: list[str]) -> None:
    """``task_index`` must index ``tasks`` (int64); all zeros when absent."""
    if "task_index" not in arrays:
        arrays["task_index"] = np.zeros(len(arrays["episode_index"]), dtype=np.int64)
        return
    ti = arrays["task_index"]
    if ti.ndim != 1 or ti.dtype.kind not in "iu":
        raise LeRobotFormatError(
            f"data['task_index'] must be a 1-D int array, got {ti.shape} {ti.dtype}"
        )
    bad_mask = (ti < 0) | (ti >= len(tasks))
    if bad_mask.any():
        row = int(np.flatnonzero(bad_mask)[0])
        raise LeRobotFormatError(
            f"data['task_index'] must index tasks (0..{len(tasks) - 1}), frame {row} has "
            f"{ti[row]}; pass tasks= with one string per task_index"
        )
    arrays["task_index"] = ti.astype(np.int64)


def check_episode_stats(
    episode_stats: dict[str, dict[str, np.ndarray]],
    arrays: dict[str, np.ndarray],
    bounds: np.ndarray,
) -> dict[str, dict[str, np.ndarray]]:
    """Check precomputed per-episode stats against the frames they claim to describe."""
    names = {*BASIC_STATS, *QUANTILES}
    n_eps = len(bounds) - 1
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, stats in episode_stats.items():
        if key not in arrays:
            raise LeRobotFormatError(
                f"episode_stats[{key!r}]: no such column in data (columns: {sorted(arrays)})"
            )
        if set(stats) != names:
            raise LeRobotFormatError(
                f"episode_stats[{key!r}] must have exactly the stats {sorted(names)}, "
                f"got {sorted(stats)}"
            )
        width = int(np.prod(arrays[key].shape[1:], dtype=np.int64))
        checked = {}
        for stat, values in stats.items():
            values = np.asarray(values)
            want = (n_eps, 1 if stat == "count" else width)
            if values.shape != want:
                raise LeRobotFormatError(
                    f"episode_stats[{key!r}][{stat!r}] has shape {values.shape}, expected {want} "
                    "(episodes, feature width), as episode_stats_arrays returns"
                )
            checked[stat] = values
        if not np.array_equal(checked["count"][:, 0], np.diff(bounds)):
            raise LeRobotFormatError(
                f"episode_stats[{key!r}]['count'] does not match the episode lengths in data"
            )
        out[key] = checked
    return out


def feature_spec(arr: np.ndarray, names: list[str] | None) -> dict[str, Any]:
    shape = [1] if arr.ndim == 1 else [int(arr.shape[1])]
    return {"dtype": str(arr.dtype), "shape": shape, "names": list(names) if names else None}
