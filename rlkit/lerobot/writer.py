"""Write in-memory frame arrays as a LeRobot **v3.0** dataset: all at once
(:func:`write_dataset`) or streamed batch by batch of whole episodes (:class:`DatasetWriter`,
the same bytes on disk).

On-disk layout::

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

import contextlib
import difflib
import json
import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
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
from rlkit.lerobot.stats import BASIC_STATS, QUANTILES, compute_stats, episode_stats_arrays
from rlkit.rundir import check_replaceable, clean_stale_temps, say
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


def _validate_options(
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


def _validate_inputs(
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
    bounds = np.concatenate([[0], np.flatnonzero(steps) + 1, [n]]).astype(np.int64)
    lengths = np.diff(bounds)
    starts = np.repeat(bounds[:-1], lengths)
    frame_index = np.arange(n, dtype=np.int64) - starts

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
            bad_mask = np.abs(got.astype(np.float64) - frame_index / fps) > _TIMESTAMP_TOL_S
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


def _check_episode_stats(
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


class _FilePlanner:
    """Assigns episodes, in order, a ``(chunk_index, file_index)``; episodes never span files.

    A new file starts when the current one would pass ``max_bytes`` (a single larger episode
    gets its own file); ``file_index`` rolls over into the next chunk after ``chunks_size``
    files. Keeps its position, so episodes can be planned batch by batch.
    """

    def __init__(self, max_bytes: float, chunks_size: int) -> None:
        self.max_bytes, self.chunks_size = max_bytes, chunks_size
        self.chunk, self.file, self.used = 0, 0, 0.0

    def assign(self, episode_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_eps = len(episode_bytes)
        chunk_idx = np.zeros(n_eps, dtype=np.int64)
        file_idx = np.zeros(n_eps, dtype=np.int64)
        for i, size in enumerate(np.asarray(episode_bytes, dtype=np.float64).tolist()):
            if self.used and self.used + size > self.max_bytes:
                self.file += 1
                if self.file >= self.chunks_size:
                    self.chunk, self.file = self.chunk + 1, 0
                self.used = 0.0
            chunk_idx[i], file_idx[i] = self.chunk, self.file
            self.used += size
        return chunk_idx, file_idx


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
    return _FilePlanner(max_bytes, chunks_size).assign(episode_bytes)


def _list_column(values: np.ndarray) -> pa.Array:
    """``(E, D)`` array -> ``list<...>`` column without a per-row loop."""
    values = np.ascontiguousarray(values)
    width = values.shape[1]
    offsets = pa.array(np.arange(values.shape[0] + 1, dtype=np.int32) * width)
    flat = pa.array(values.reshape(-1))
    return pa.ListArray.from_arrays(offsets, flat)


def _column_blocks(parts: list[np.ndarray], blocks: int) -> list[list[np.ndarray]]:
    """Split a feature (given as row parts) into up to ``blocks`` column blocks: its stats
    are per column, so the blocks can be computed on different cores."""
    if parts[0].ndim == 1 or blocks <= 1:
        return [parts]
    ranges = np.array_split(np.arange(parts[0].shape[1]), min(blocks, parts[0].shape[1]))
    return [[p[:, r[0] : r[-1] + 1] for p in parts] for r in ranges]


class DatasetWriter:
    """Write a LeRobot v3.0 dataset batch by batch of whole episodes; atomic at :meth:`close`.

    Each :meth:`add` validates its batch at once, then encodes its frames (one row group per
    episode) and computes its per-episode stats in background threads, so a producer can
    stream episodes in while it records more (the writer keeps the arrays: do not modify them
    afterwards); :meth:`close` computes the global stats, writes the metadata and moves the
    folder into place. Use it as a context manager: an exception discards everything.

    Example::

        with DatasetWriter("out", fps=20, tasks=["drive"]) as w:
            for batch in batches:  # episode_index continues from batch to batch
                w.add(batch)
            w.close()

    Args:
        root: Output folder; must not exist unless ``overwrite``.
        fps, tasks, feature_names, robot_type, overwrite, data_files_size_in_mb, chunks_size:
            As :func:`write_dataset`.

    Raises:
        LeRobotFormatError: If an option is invalid.
        FileExistsError: If ``root`` exists and ``overwrite`` is False.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        fps: int,
        tasks: list[str] | None = None,
        feature_names: dict[str, list[str]] | None = None,
        robot_type: str | None = None,
        overwrite: bool = False,
        data_files_size_in_mb: float = 100.0,
        chunks_size: int = 1000,
    ) -> None:
        self.root = Path(root)
        self.fps = fps
        self.tasks = list(tasks) if tasks is not None else ["default"]
        self.feature_names = dict(feature_names or {})
        self.robot_type = robot_type
        self.overwrite = overwrite
        self.data_files_size_in_mb = data_files_size_in_mb
        self.chunks_size = chunks_size
        _validate_options(fps, self.tasks, data_files_size_in_mb, chunks_size)
        check_output(self.root, overwrite)
        self._t0 = time.perf_counter()
        self._planner = _FilePlanner(data_files_size_in_mb * 1024**2, chunks_size)
        self._features: dict[str, dict[str, Any]] | None = None
        self._schema: pa.Schema | None = None
        self._dict_cols: list[str] = []
        self._arrays: list[dict[str, np.ndarray]] = []
        self._lengths: list[np.ndarray] = []
        self._files: list[tuple[np.ndarray, np.ndarray]] = []
        # per batch: column -> per-episode stats (or the job computing them)
        self._ep_stats: list[dict[str, Any]] = []
        self._pq: pq.ParquetWriter | None = None
        self._pq_key: tuple[int, int] | None = None
        self._write_job: Future[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=max(2, available_cores()))
        self.root.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.root)
        # Created by the first add(), not here: a caller holding no writer yet (Ctrl-C
        # between this constructor and the assignment of its result) cannot abort it.
        self._tmp = self.root.parent / f".{self.root.name}.tmp-{os.getpid()}"
        self._open = True

    @property
    def num_episodes(self) -> int:
        return sum(len(x) for x in self._lengths)

    @property
    def num_frames(self) -> int:
        return sum(int(x.sum()) for x in self._lengths)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None or self._open:
            self.abort()

    def add(
        self,
        data: dict[str, np.ndarray],
        episode_stats: dict[str, dict[str, np.ndarray]] | None = None,
    ) -> None:
        """Append whole episodes (``episode_index`` continuing from the previous batch).

        Args:
            data: As :func:`write_dataset`'s ``data``, for these episodes; the same columns,
                dtypes and widths as the first batch.
            episode_stats: As :func:`write_dataset`'s, for these episodes.

        Raises:
            LeRobotFormatError: If the batch is invalid (nothing of it is written; the writer
                stays usable).
            OSError: If writing the previous batch failed (the writer is aborted).
        """
        if not self._open:
            raise RuntimeError(f"DatasetWriter for {self.root} is already closed")
        arrays, bounds = _validate_inputs(
            data, self.fps, self.tasks, self.feature_names, self.num_episodes, self.num_frames
        )
        given = _check_episode_stats(episode_stats or {}, arrays, bounds)
        order = [k for k in arrays if k not in INDEX_FEATURES] + list(INDEX_FEATURES)
        arrays = {k: arrays[k] for k in order}
        features = {k: _feature_spec(arrays[k], self.feature_names.get(k)) for k in order}
        for k in INDEX_FEATURES:
            features[k]["names"] = None
        if self._features is None:
            self._start(features)
        elif features != self._features:
            diff = next(
                k for k in [*self._features, *features] if features.get(k) != self._features.get(k)
            )
            raise LeRobotFormatError(
                f"batch {len(self._lengths)}: column {diff!r} is {features.get(diff)} but the "
                f"first batch had {self._features.get(diff)}; every batch needs the same columns"
            )
        lengths = np.diff(bounds)
        row_bytes = sum(arrays[k].nbytes for k in order) // int(bounds[-1])
        files = self._planner.assign(lengths * row_bytes)
        table = pa.table({k: _to_arrow(arrays[k]) for k in order}, schema=self._schema)
        # The parquet encoding and the stats release the GIL: they run in the pool while the
        # caller produces the next batch. One batch is encoded at a time, in order.
        try:
            self._wait_for_write()
            self._write_job = self._pool.submit(self._write_frames, table, bounds, files)
            stats = {
                k: self._pool.submit(episode_stats_arrays, arrays[k], bounds)
                for k in sorted(order, key=lambda k: -arrays[k].nbytes)
                if k not in given
            }
        except BaseException:
            self.abort()
            raise
        self._arrays.append(arrays)
        self._lengths.append(lengths)
        self._files.append(files)
        self._ep_stats.append({k: given[k] if k in given else stats[k] for k in order})

    def _wait_for_write(self) -> None:
        """Wait for the batch being encoded; re-raise its error (e.g. disk full)."""
        if self._write_job is not None:
            job, self._write_job = self._write_job, None
            job.result()

    def _start(self, features: dict[str, dict[str, Any]]) -> None:
        if self._tmp.exists():
            shutil.rmtree(self._tmp)
        (self._tmp / "meta").mkdir(parents=True)
        self._features = features
        hf = {k: _hf_feature(f["dtype"], tuple(f["shape"])) for k, f in features.items()}
        types = {
            k: pa.from_numpy_dtype(np.dtype(f["dtype"]))
            if f["shape"] == [1]
            else pa.list_(pa.from_numpy_dtype(np.dtype(f["dtype"])), f["shape"][0])
            for k, f in features.items()
        }
        self._schema = pa.schema(list(types.items())).with_metadata(
            {"huggingface": json.dumps({"info": {"features": hf}})}
        )
        # Dictionary encoding only pays off for low-cardinality columns; on float vectors
        # pyarrow tries it, gives up, and it costs ~3x the write time and bigger files.
        self._dict_cols = [
            f.name
            for f in self._schema
            if f.name in ("episode_index", "task_index") or pa.types.is_boolean(f.type)
        ]

    def _write_frames(
        self, table: pa.Table, bounds: np.ndarray, files: tuple[np.ndarray, np.ndarray]
    ) -> None:
        """One row group per episode, into the file the plan says (opening it if new)."""
        for e in range(len(bounds) - 1):
            key = (int(files[0][e]), int(files[1][e]))
            if key != self._pq_key:
                if self._pq is not None:
                    self._pq.close()
                path = self._tmp / DATA_PATH.format(chunk_index=key[0], file_index=key[1])
                path.parent.mkdir(parents=True, exist_ok=True)
                self._pq = pq.ParquetWriter(path, self._schema, use_dictionary=self._dict_cols)
                self._pq_key = key
            assert self._pq is not None
            lo, hi = int(bounds[e]), int(bounds[e + 1])
            self._pq.write_table(table.slice(lo, hi - lo), row_group_size=hi - lo)

    def close(self, extra_files: dict[str, str] | None = None) -> Path:
        """Write the metadata and move the dataset into place; returns its folder.

        Args:
            extra_files: Relative path -> text, written inside the dataset before it is moved
                into place, so they land atomically too.
        """
        if not self._open:
            raise RuntimeError(f"DatasetWriter for {self.root} is already closed")
        if not self._lengths:
            self.abort()
            raise LeRobotFormatError(f"{self.root}: no episodes were added; nothing to write")
        try:
            n_eps, n, n_files = self._finish(extra_files or {})
            publish_dir(self._tmp, self.root, overwrite=self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._open = False
        self._pool.shutdown()
        dt = time.perf_counter() - self._t0
        logger.info(
            "wrote %s: %d episodes, %d frames, %d data file(s) in %.2fs (%.0f frames/s)",
            self.root,
            n_eps,
            n,
            n_files,
            dt,
            n / max(dt, 1e-9),
        )
        return self.root

    def abort(self) -> None:
        """Discard everything written so far (the final folder is never touched)."""
        self._open = False
        self._pool.shutdown(cancel_futures=True)  # waits for a batch being encoded
        if self._pq is not None:
            with contextlib.suppress(Exception):
                self._pq.close()
            self._pq = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _finish(self, extra_files: dict[str, str]) -> tuple[int, int, int]:
        assert self._features is not None
        order = list(self._features)
        lengths = np.concatenate(self._lengths)
        bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        n_eps, n = len(lengths), int(bounds[-1])
        chunk_idx = np.concatenate([f[0] for f in self._files])
        file_idx = np.concatenate([f[1] for f in self._files])

        # Global stats from the batches as they are (no concatenated copy), every feature split
        # into column blocks so a wide one (the state vector) is sorted on every core; they
        # start while the last batch is still being encoded.
        cores = max(2, available_cores())
        by_size = sorted(order, key=lambda k: -self._arrays[0][k].nbytes)
        jobs = {
            k: [
                self._pool.submit(compute_stats, block)
                for block in _column_blocks([a[k] for a in self._arrays], cores)
            ]
            for k in by_size
        }
        self._wait_for_write()
        if self._pq is not None:
            self._pq.close()
            self._pq = None
        global_stats: dict[str, dict[str, Any]] = {}
        for k in order:
            parts = [j.result() for j in jobs[k]]
            merged = {
                s: parts[0][s] if s == "count" else np.concatenate([p[s] for p in parts])
                for s in parts[0]
            }
            global_stats[k] = _stats_to_json(merged)

        # ---- episodes metadata
        ep_columns: dict[str, pa.Array] = {}
        for k in order:
            ep_stats = [s[k] if isinstance(s[k], dict) else s[k].result() for s in self._ep_stats]
            for stat in ep_stats[0]:
                values = np.concatenate([s[stat] for s in ep_stats])
                ep_columns[f"stats/{k}/{stat}"] = _list_column(values)
        task_idx = np.concatenate([a["task_index"] for a in self._arrays])
        ep_task_lists: list[list[str]] = []
        if int(task_idx.max()) == int(task_idx.min()):  # common case: one task for everything
            ep_task_lists = [[self.tasks[int(task_idx[0])]]] * n_eps
        else:
            for e in range(n_eps):
                seg = task_idx[bounds[e] : bounds[e + 1]]
                _, first = np.unique(seg, return_index=True)
                ep_task_lists.append([self.tasks[int(seg[i])] for i in sorted(first)])
        zeros = np.zeros(n_eps, dtype=np.int64)
        episodes = {
            "episode_index": pa.array(np.arange(n_eps, dtype=np.int64)),
            "tasks": pa.array(ep_task_lists, type=pa.list_(pa.string())),
            "length": pa.array(lengths),
            "data/chunk_index": pa.array(chunk_idx),
            "data/file_index": pa.array(file_idx),
            "dataset_from_index": pa.array(bounds[:-1]),
            "dataset_to_index": pa.array(bounds[1:]),
            **ep_columns,
            "meta/episodes/chunk_index": pa.array(zeros),
            "meta/episodes/file_index": pa.array(zeros),
        }
        tmp = self._tmp
        ep_path = tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        ep_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(episodes), ep_path)

        # ---- tasks, stats, info
        tasks_df = pd.DataFrame(
            {"task_index": np.arange(len(self.tasks), dtype=np.int64)},
            index=pd.Index(self.tasks, name="task"),
        )
        tasks_df.to_parquet(tmp / TASKS_PATH)
        with open(tmp / STATS_PATH, "w", encoding="utf-8") as f:
            json.dump(global_stats, f, indent=4)
        size = self.data_files_size_in_mb
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": n_eps,
            "total_frames": n,
            "total_tasks": len(self.tasks),
            "chunks_size": int(self.chunks_size),
            "data_files_size_in_mb": int(size) if float(size).is_integer() else float(size),
            "video_files_size_in_mb": DEFAULT_VIDEO_FILES_SIZE_IN_MB,
            "fps": int(self.fps),
            "splits": {"train": f"0:{n_eps}"},
            "data_path": DATA_PATH,
            "video_path": None,
            "features": self._features,
        }
        with open(tmp / INFO_PATH, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=4, ensure_ascii=False)
        for rel, text in extra_files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        n_files = len(set(zip(chunk_idx.tolist(), file_idx.tolist(), strict=True)))
        return n_eps, n, n_files


def check_output(root: Path, overwrite: bool, flag: str = "--output") -> None:
    """Refuse an output the writers may not replace; call it before any work.

    ``root`` may be missing, or (with ``overwrite``) a folder holding only what a LeRobot
    dataset writer puts there (``meta/``, ``data/``, ``videos/``, the run's
    ``config.resolved.yml``, ...). A regular file, or a folder holding anything else (a
    ``notes.txt``, another tool's run), is refused, naming what is there.

    Raises:
        FileExistsError: As above, or ``root`` is a dataset and ``overwrite`` is False.
    """
    if root.exists() or root.is_symlink():
        check_replaceable(root, "dataset", flag=flag)
        if not overwrite:
            raise FileExistsError(f"{root} exists; pass --overwrite or choose another {flag}")


def remove_stale_temps(root: Path) -> None:
    """Remove the temporary folders a killed writer of ``root`` left beside it.

    A SIGKILLed collection or merge leaves ``.NAME.tmp-PID`` (and, killed while replacing,
    ``.NAME.old-PID``) behind; only those whose process is gone are removed.
    """
    for path in clean_stale_temps(root.parent, prefix=f"{root.name}.", recursive=False):
        say(f"removed {path}, left by a killed process")


def publish_dir(tmp: Path, root: Path, *, overwrite: bool) -> None:
    """Move the finished folder ``tmp`` to ``root`` with ``os.replace`` (same filesystem).

    An existing ``root`` is moved aside first and removed only after the new folder is in
    place; if the final rename fails the previous folder is put back. This is the one place
    datasets are replaced: ``root`` is checked again here (:func:`check_output`), since
    anything may have appeared there while ``tmp`` was being written.

    Args:
        tmp: The completely written folder (a sibling of ``root``).
        root: The final name.
        overwrite: Replace an existing ``root``; otherwise its appearance is an error.

    Raises:
        FileExistsError: If ``root`` exists and ``overwrite`` is False, or ``root`` is a file
            or holds files a dataset writer does not write.
    """
    if root.exists() or root.is_symlink():
        check_output(root, overwrite)  # appeared, or changed, while we were writing
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
    episode_stats: dict[str, dict[str, np.ndarray]] | None = None,
) -> Path:
    """Write frame arrays as a LeRobot v3.0 dataset at ``root`` (atomically).

    One :class:`DatasetWriter` batch; use the writer directly to stream episodes in.

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
        episode_stats: Per-episode stats already computed for some columns, ``{column: {stat:
            (E, D) array}}`` as :func:`~rlkit.lerobot.stats.episode_stats_arrays` returns them
            (the collector's workers compute them in parallel); the others are computed here.

    Returns:
        The dataset folder.

    Raises:
        LeRobotFormatError: If the inputs are invalid (nothing is written).
        FileExistsError: If ``root`` exists and ``overwrite`` is False.
    """
    with DatasetWriter(
        root,
        fps=fps,
        tasks=tasks,
        feature_names=feature_names,
        robot_type=robot_type,
        overwrite=overwrite,
        data_files_size_in_mb=data_files_size_in_mb,
        chunks_size=chunks_size,
    ) as writer:
        writer.add(data, episode_stats)
        return writer.close(extra_files)
