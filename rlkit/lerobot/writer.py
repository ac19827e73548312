"""Write in-memory frame arrays as a LeRobot **v3.0** dataset.

On-disk layout written by :func:`write_dataset`::

    root/
    ├── meta/
    │   ├── info.json            codebase_version "v3.0", totals, fps, features (+ 5 index features)
    │   ├── stats.json           {feature: {min,max,mean,std,count,q01,q10,q50,q90,q99}: lists}
    │   ├── tasks.parquet        pandas frame indexed by task string, column task_index:int64
    │   └── episodes/
    │       └── chunk-000/
    │           └── file-000.parquet   one row per episode: episode_index, tasks, length,
    │                                  data/chunk_index, data/file_index, dataset_from_index,
    │                                  dataset_to_index, stats/{feature}/{stat},
    │                                  meta/episodes/chunk_index, meta/episodes/file_index
    └── data/
        ├── chunk-000/
        │   ├── file-000.parquet       many whole episodes, one row group per episode
        │   └── file-001.parquet       (new file when data_files_size_in_mb would be passed)
        └── chunk-001/                 (new chunk every chunks_size files)

Frame time index: frame ``t`` of an episode has ``frame_index = t`` and
``timestamp = t / fps`` seconds (float32); ``index`` is the global row position 0..N-1.

Vectors are stored as ``fixed_size_list<float>[D]`` (from the flat numpy buffer), scalars as
plain columns, and the parquet schema carries lerobot's ``huggingface`` metadata. Everything
is written into a hidden sibling folder and moved into place with ``os.replace``.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rlkit.lerobot.reader import (
    DATA_PATH,
    EPISODES_PATH,
    INDEX_FEATURES,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    LeRobotFormatError,
)
from rlkit.lerobot.stats import compute_stats, episode_stats_arrays
from rlkit.utils import available_cores

logger = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
DEFAULT_VIDEO_FILES_SIZE_IN_MB = 500
_TIMESTAMP_TOL_S = 1e-4


def _hf_feature(dtype: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """The ``datasets`` feature description lerobot stores in the parquet metadata."""
    value = {"dtype": dtype, "_type": "Value"}
    if shape == (1,):
        return value
    return {"feature": value, "length": shape[0], "_type": "Sequence"}


def _validate_inputs(
    data: dict[str, np.ndarray],
    fps: int,
    tasks: list[str],
    feature_names: dict[str, list[str]],
    data_files_size_in_mb: float,
    chunks_size: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Check everything up front; return the arrays with index columns added and the bounds."""
    if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or fps <= 0:
        raise LeRobotFormatError(f"fps must be a positive int, got {fps!r}")
    if not data_files_size_in_mb > 0:
        raise LeRobotFormatError(f"data_files_size_in_mb must be > 0, got {data_files_size_in_mb}")
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
    assert n is not None
    if n == 0:
        raise LeRobotFormatError("data has 0 frames; a dataset needs at least one frame")

    # episode_index: integer, 1-D, starts at 0, steps by 0 or +1 (contiguous, sorted, no gaps)
    ep = arrays["episode_index"]
    if ep.ndim != 1 or ep.dtype.kind not in "iu":
        raise LeRobotFormatError(
            f"data['episode_index'] must be a 1-D int array, got {ep.shape} {ep.dtype}"
        )
    ep = ep.astype(np.int64)
    steps = np.diff(ep)
    if ep[0] != 0 or np.any((steps != 0) & (steps != 1)):
        bad = 0 if ep[0] != 0 else int(np.flatnonzero((steps != 0) & (steps != 1))[0]) + 1
        prev = "start" if bad == 0 else f"{ep[bad - 1]} at frame {bad - 1}"
        raise LeRobotFormatError(
            f"data['episode_index'] must be contiguous and sorted from 0 (each episode's frames "
            f"together, episodes numbered 0..E-1 in order); frame {bad} has {ep[bad]} after "
            f"{prev}"
        )
    arrays["episode_index"] = ep
    bounds = np.concatenate([[0], np.flatnonzero(steps) + 1, [n]]).astype(np.int64)
    lengths = np.diff(bounds)
    starts = np.repeat(bounds[:-1], lengths)
    frame_index = np.arange(n, dtype=np.int64) - starts

    derived = {
        "frame_index": frame_index,
        "index": np.arange(n, dtype=np.int64),
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
            bad_mask = np.abs(got.astype(np.float64) - frame_index / fps) > _TIMESTAMP_TOL_S
            fix = f"frame_index / fps (fps={fps})"
        else:
            if got.dtype.kind not in "iu":
                raise LeRobotFormatError(
                    f"data[{key!r}] must be an int array, got dtype {got.dtype}"
                )
            bad_mask = got != expected
            fix = "0.. per episode" if key == "frame_index" else "0..N-1 in row order"
        if bad_mask.any():
            row = int(np.flatnonzero(bad_mask)[0])
            raise LeRobotFormatError(
                f"data[{key!r}] is inconsistent at frame {row} (episode {ep[row]}): got "
                f"{got[row]}, expected {expected[row]} ({fix}); fix it or leave the column out "
                "to have it derived"
            )
        arrays[key] = got.astype(expected.dtype)

    if "task_index" in arrays:
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
    else:
        arrays["task_index"] = np.zeros(n, dtype=np.int64)

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


def _feature_spec(arr: np.ndarray, names: list[str] | None) -> dict[str, Any]:
    shape = [1] if arr.ndim == 1 else [int(arr.shape[1])]
    return {"dtype": str(arr.dtype), "shape": shape, "names": list(names) if names else None}


def _to_arrow(arr: np.ndarray) -> pa.Array:
    if arr.ndim == 1:
        return pa.array(arr)
    flat = pa.array(np.ascontiguousarray(arr).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, int(arr.shape[1]))


def _stats_to_json(stats: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: v.tolist() for k, v in stats.items()}


def plan_files(
    episode_bytes: np.ndarray, max_bytes: float, chunks_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Assign each episode a ``(chunk_index, file_index)``; episodes never span files.

    A new file starts when the current one would pass ``max_bytes``; ``file_index`` rolls
    over into the next chunk after ``chunks_size`` files.

    Args:
        episode_bytes: Estimated bytes of each episode, in episode order.
        max_bytes: Target maximum bytes per file (a single larger episode gets its own file).
        chunks_size: Files per ``chunk-XXX`` folder.

    Returns:
        ``(chunk_index, file_index)``, two int64 arrays with one entry per episode.
    """
    n_eps = len(episode_bytes)
    chunk_idx = np.zeros(n_eps, dtype=np.int64)
    file_idx = np.zeros(n_eps, dtype=np.int64)
    chunk, file, used = 0, 0, 0.0
    for i, size in enumerate(np.asarray(episode_bytes, dtype=np.float64).tolist()):
        if used and used + size > max_bytes:
            file += 1
            if file >= chunks_size:
                chunk, file = chunk + 1, 0
            used = 0.0
        chunk_idx[i], file_idx[i] = chunk, file
        used += size
    return chunk_idx, file_idx


def _plan_files(
    bounds: np.ndarray, row_bytes: int, max_bytes: float, chunks_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Assign each episode a (chunk_index, file_index); episodes never span files."""
    return plan_files(np.diff(bounds) * row_bytes, max_bytes, chunks_size)


def _list_column(values: np.ndarray) -> pa.Array:
    """``(E, D)`` array -> ``list<...>`` column without a per-row loop."""
    values = np.ascontiguousarray(values)
    width = values.shape[1]
    offsets = pa.array(np.arange(values.shape[0] + 1, dtype=np.int32) * width)
    flat = pa.array(values.reshape(-1))
    return pa.ListArray.from_arrays(offsets, flat)


def _write_data_files(
    tmp: Path, table: pa.Table, bounds: np.ndarray, chunk_idx: np.ndarray, file_idx: np.ndarray
) -> None:
    """Write the frames: one row group per episode, a new file where the plan says so."""
    # Dictionary encoding only pays off for low-cardinality columns; on float vectors pyarrow
    # tries it, gives up, and it costs ~3x the write time and bigger files.
    dict_cols = [
        f.name
        for f in table.schema
        if f.name in ("episode_index", "task_index") or pa.types.is_boolean(f.type)
    ]
    writer: pq.ParquetWriter | None = None
    current: tuple[int, int] | None = None
    try:
        for e in range(len(bounds) - 1):
            key = (int(chunk_idx[e]), int(file_idx[e]))
            if key != current:
                if writer is not None:
                    writer.close()
                path = tmp / DATA_PATH.format(chunk_index=key[0], file_index=key[1])
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(path, table.schema, use_dictionary=dict_cols)
                current = key
            assert writer is not None
            lo, hi = int(bounds[e]), int(bounds[e + 1])
            writer.write_table(table.slice(lo, hi - lo), row_group_size=hi - lo)
    finally:
        if writer is not None:
            writer.close()


def _write_tree(
    tmp: Path,
    arrays: dict[str, np.ndarray],
    bounds: np.ndarray,
    fps: int,
    tasks: list[str],
    feature_names: dict[str, list[str]],
    robot_type: str | None,
    data_files_size_in_mb: float,
    chunks_size: int,
) -> tuple[int, int]:
    n = int(bounds[-1])
    n_eps = len(bounds) - 1
    # user columns first (given order), then lerobot's five index features
    order = [k for k in arrays if k not in INDEX_FEATURES] + list(INDEX_FEATURES)
    features: dict[str, dict[str, Any]] = {}
    for key in order:
        spec = _feature_spec(arrays[key], feature_names.get(key))
        if key in INDEX_FEATURES:
            spec["names"] = None
        features[key] = spec
    hf_features = {k: _hf_feature(f["dtype"], tuple(f["shape"])) for k, f in features.items()}
    table = pa.table({k: _to_arrow(arrays[k]) for k in order})
    table = table.replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": hf_features}})}
    )

    # ---- data files: one row group per episode, roll over on size / chunks_size
    row_bytes = sum(arrays[k].nbytes for k in order) // n
    chunk_idx, file_idx = _plan_files(
        bounds, row_bytes, data_files_size_in_mb * 1024**2, chunks_size
    )
    # Parquet encoding (pyarrow) and the stats (numpy sorts) both release the GIL, so they run
    # as concurrent jobs on every core: parquet, then per feature its per-episode and its
    # global stats, largest features first.
    by_size = sorted(order, key=lambda k: -arrays[k].nbytes)
    with ThreadPoolExecutor(max_workers=max(2, available_cores())) as pool:
        data_job = pool.submit(_write_data_files, tmp, table, bounds, chunk_idx, file_idx)
        ep_jobs = {k: pool.submit(episode_stats_arrays, arrays[k], bounds) for k in by_size}
        global_jobs = {k: pool.submit(compute_stats, arrays[k]) for k in by_size}
        global_stats: dict[str, dict[str, Any]] = {}
        ep_columns: dict[str, pa.Array] = {}
        for key in order:
            for stat, values in ep_jobs[key].result().items():
                ep_columns[f"stats/{key}/{stat}"] = _list_column(values)
            global_stats[key] = _stats_to_json(global_jobs[key].result())
        data_job.result()

    # ---- episodes metadata
    task_idx = arrays["task_index"]
    ep_task_lists: list[list[str]] = []
    if int(task_idx.max()) == int(task_idx.min()):  # common case: one task for everything
        ep_task_lists = [[tasks[int(task_idx[0])]]] * n_eps
    else:
        for e in range(n_eps):
            seg = task_idx[bounds[e] : bounds[e + 1]]
            _, first = np.unique(seg, return_index=True)
            ep_task_lists.append([tasks[int(seg[i])] for i in sorted(first)])
    zeros = np.zeros(n_eps, dtype=np.int64)
    episodes = {
        "episode_index": pa.array(np.arange(n_eps, dtype=np.int64)),
        "tasks": pa.array(ep_task_lists, type=pa.list_(pa.string())),
        "length": pa.array(np.diff(bounds)),
        "data/chunk_index": pa.array(chunk_idx),
        "data/file_index": pa.array(file_idx),
        "dataset_from_index": pa.array(bounds[:-1]),
        "dataset_to_index": pa.array(bounds[1:]),
        **ep_columns,
        "meta/episodes/chunk_index": pa.array(zeros),
        "meta/episodes/file_index": pa.array(zeros),
    }
    ep_path = tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(episodes), ep_path)

    # ---- tasks, stats, info
    tasks_df = pd.DataFrame(
        {"task_index": np.arange(len(tasks), dtype=np.int64)},
        index=pd.Index(tasks, name="task"),
    )
    tasks_df.to_parquet(tmp / TASKS_PATH)
    with open(tmp / STATS_PATH, "w", encoding="utf-8") as f:
        json.dump(global_stats, f, indent=4)
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": n_eps,
        "total_frames": n,
        "total_tasks": len(tasks),
        "chunks_size": int(chunks_size),
        "data_files_size_in_mb": (
            int(data_files_size_in_mb)
            if float(data_files_size_in_mb).is_integer()
            else float(data_files_size_in_mb)
        ),
        "video_files_size_in_mb": DEFAULT_VIDEO_FILES_SIZE_IN_MB,
        "fps": int(fps),
        "splits": {"train": f"0:{n_eps}"},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": features,
    }
    with open(tmp / INFO_PATH, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=4, ensure_ascii=False)
    n_files = len(set(zip(chunk_idx.tolist(), file_idx.tolist(), strict=True)))
    return n_eps, n_files


def publish_dir(tmp: Path, root: Path, *, overwrite: bool) -> None:
    """Move the finished folder ``tmp`` to ``root`` with ``os.replace`` (same filesystem).

    An existing ``root`` is moved aside first and removed only after the new folder is in
    place; if the final rename fails the previous folder is put back.

    Args:
        tmp: The completely written folder (a sibling of ``root``).
        root: The final name.
        overwrite: Replace an existing ``root``; otherwise its appearance is an error.

    Raises:
        FileExistsError: If ``root`` exists and ``overwrite`` is False.
    """
    if root.exists():
        if not overwrite:  # appeared while we were writing
            raise FileExistsError(f"{root} exists; pass --overwrite or choose another --output")
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        os.replace(root, old)
        try:
            os.replace(tmp, root)
        except BaseException:
            os.replace(old, root)  # put the previous dataset back
            raise
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.replace(tmp, root)


def write_dataset(
    root: str | Path,
    data: dict[str, np.ndarray],
    *,
    fps: int,
    tasks: list[str] | None = None,
    feature_names: dict[str, list[str]] | None = None,
    robot_type: str | None = None,
    overwrite: bool = False,
    data_files_size_in_mb: float = 100.0,
    chunks_size: int = 1000,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write frame arrays as a LeRobot v3.0 dataset at ``root`` (atomically).

    Args:
        root: Output folder; must not exist unless ``overwrite``.
        data: Column name -> array with first dim N (frames), ``(N,)`` for scalars (stored with
            shape ``[1]``) or ``(N, D)`` for vectors, numeric or bool. ``episode_index`` (N,)
            int is required, contiguous per episode, numbered 0..E-1 in order. ``(N, 1)``
            arrays are stored as scalars (shape ``[1]``) and read back as ``(N,)``. ``timestamp``
            (``frame_index / fps``, float32), ``frame_index``, ``index`` and ``task_index``
            (int64) are derived when absent and checked when present.
        fps: Frames per second (> 0).
        tasks: Task strings, row order = ``task_index`` (default ``["default"]``).
        feature_names: Per-dimension names of features, stored as ``features[key]["names"]``.
        robot_type: Stored in ``info.json``.
        overwrite: Replace an existing ``root`` (the old folder is removed only after the new
            one is in place).
        data_files_size_in_mb: Start a new data file when the current one would pass this size
            (estimated from the in-memory bytes of the frames).
        chunks_size: Data files per ``chunk-XXX`` folder.
        extra_files: Relative path -> text, written inside the dataset before it is moved
            into place (e.g. the run's ``config.resolved.yml``), so they land atomically too.

    Returns:
        The dataset folder.

    Raises:
        LeRobotFormatError: If the inputs are invalid (nothing is written).
        FileExistsError: If ``root`` exists and ``overwrite`` is False.
    """
    t0 = time.perf_counter()
    root = Path(root)
    tasks = list(tasks) if tasks is not None else ["default"]
    feature_names = dict(feature_names or {})
    if root.exists() and not overwrite:
        raise FileExistsError(f"{root} exists; pass --overwrite or choose another --output")
    arrays, bounds = _validate_inputs(
        data, fps, tasks, feature_names, data_files_size_in_mb, chunks_size
    )

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        (tmp / "meta").mkdir()
        n_eps, n_files = _write_tree(
            tmp,
            arrays,
            bounds,
            fps,
            tasks,
            feature_names,
            robot_type,
            data_files_size_in_mb,
            chunks_size,
        )
        for rel, text in (extra_files or {}).items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        publish_dir(tmp, root, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    dt = time.perf_counter() - t0
    n = int(bounds[-1])
    logger.info(
        "wrote %s: %d episodes, %d frames, %d data file(s) in %.2fs (%.0f frames/s)",
        root,
        n_eps,
        n,
        n_files,
        dt,
        n / max(dt, 1e-9),
    )
    return root
