"""Write in-memory frame arrays as a LeRobot **v3.0** dataset: all at once
(:func:`write_dataset`) or streamed batch by batch of whole episodes (:class:`DatasetWriter`,
the same bytes on disk).

The data files hold many whole episodes each, one parquet row group per episode; a new file
starts when ``data_files_size_in_mb`` would be passed and a new chunk folder every
``chunks_size`` files (:class:`~rlkit.lerobot.layout.FilePlanner`). The metadata
(``meta/info.json``, ``stats.json``, ``tasks.parquet``, ``episodes/``) is written by
:func:`rlkit.lerobot.meta.write_meta`, the same writer the merger uses.

Frame time index: frame ``t`` of an episode has ``frame_index = t`` and
``timestamp = t / fps`` seconds (float32); ``index`` is the global row position 0..N-1.

Vectors are stored as ``fixed_size_list<float>[D]`` (from the flat numpy buffer), scalars as
plain columns, and the parquet schema carries lerobot's ``huggingface`` metadata. Everything
is written into a hidden sibling folder and moved into place with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rlkit.lerobot.batch import check_batch, check_episode_stats, check_options, feature_spec
from rlkit.lerobot.layout import (
    DEFAULT_CHUNKS_SIZE,
    DEFAULT_DATA_FILES_SIZE_IN_MB,
    DEFAULT_VIDEO_FILES_SIZE_IN_MB,
    INDEX_FEATURES,
    DataFileWriter,
    FilePlanner,
    Layout,
    LeRobotFormatError,
    arrow_type,
    hf_feature,
    parquet_schema,
)
from rlkit.lerobot.meta import (
    DatasetMeta,
    check_output,
    new_dir,
    publish_dir,
    remove_stale_temps,
    temp_path,
    write_meta,
)
from rlkit.lerobot.stats import aggregate_stats, compute_stats, episode_stats_arrays
from rlkit.lerobot.video import VideoFileWriter, video_feature
from rlkit.utils import available_cores

logger = logging.getLogger(__name__)
#: Numbers the writers of this process, so their pools' thread names never repeat (an id()
#: is reused after a writer is freed, and its pool's idle threads may outlive it)
_WRITERS = itertools.count()


def _to_arrow(arr: np.ndarray) -> pa.Array:
    if arr.ndim == 1:
        return pa.array(arr)
    flat = pa.array(np.ascontiguousarray(arr).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, int(arr.shape[1]))


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
        data_files_size_in_mb: float = DEFAULT_DATA_FILES_SIZE_IN_MB,
        chunks_size: int = DEFAULT_CHUNKS_SIZE,
        video_files_size_in_mb: float = DEFAULT_VIDEO_FILES_SIZE_IN_MB,
    ) -> None:
        self.root = Path(root)
        self.video_files_size_in_mb = video_files_size_in_mb
        # video feature -> its file writer, feature spec, per-episode locations and stats
        self._videos: dict[str, VideoFileWriter] = {}
        self._video_features: dict[str, dict[str, Any]] = {}
        self._video_locs: dict[str, list[tuple[int, int, float, float]]] = {}
        self._video_stats: dict[str, list[dict[str, np.ndarray]]] = {}
        self.fps = fps
        self.tasks = list(tasks) if tasks is not None else ["default"]
        self.feature_names = dict(feature_names or {})
        self.robot_type = robot_type
        self.overwrite = overwrite
        self.data_files_size_in_mb = data_files_size_in_mb
        self.chunks_size = chunks_size
        check_options(fps, self.tasks, data_files_size_in_mb, chunks_size)
        check_output(self.root, overwrite)
        self._t0 = time.perf_counter()
        self._planner = FilePlanner(data_files_size_in_mb * 1024**2, chunks_size)
        self._features: dict[str, dict[str, Any]] | None = None
        self._schema: pa.Schema | None = None
        self._data: DataFileWriter | None = None  # set by the first add()
        self._arrays: list[dict[str, np.ndarray]] = []
        self._lengths: list[np.ndarray] = []
        self._files: list[tuple[np.ndarray, np.ndarray]] = []
        # per batch: column -> per-episode stats (or the job computing them)
        self._ep_stats: list[dict[str, Any]] = []
        self._write_job: Future[None] | None = None
        self._threads = f"rlkit-writer-{next(_WRITERS)}"  # its pool's threads: "<this>_<n>"
        self._pool = ThreadPoolExecutor(max(2, available_cores()), thread_name_prefix=self._threads)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.root)
        # Created by the first add(), not here: a caller holding no writer yet (Ctrl-C
        # between this constructor and the assignment of its result) cannot abort it.
        self._tmp = temp_path(self.root)
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
        videos: dict[str, tuple[list[bytes], dict[str, np.ndarray]]] | None = None,
    ) -> None:
        """Append whole episodes (``episode_index`` continuing from the previous batch).

        Args:
            data: As :func:`write_dataset`'s ``data``, for these episodes; the same columns,
                dtypes and widths as the first batch.
            episode_stats: As :func:`write_dataset`'s, for these episodes.
            videos: Video feature -> (one encoded mp4 per episode, from
                :func:`~rlkit.lerobot.video.encode_episode`; their per-episode image stats,
                each ``(E, 3, 1, 1)``, ``count`` ``(E, 1)``). The episodes' packets are
                appended to the feature's video files as they are, never re-encoded.

        Raises:
            LeRobotFormatError: If the batch is invalid (nothing of it is written; the writer
                stays usable).
            OSError: If writing the previous batch failed (the writer is aborted).
        """
        if not self._open:
            raise RuntimeError(f"DatasetWriter for {self.root} is already closed")
        arrays, bounds = check_batch(
            data, self.fps, self.tasks, self.feature_names, self.num_episodes, self.num_frames
        )
        given = check_episode_stats(episode_stats or {}, arrays, bounds)
        order = [k for k in arrays if k not in INDEX_FEATURES] + list(INDEX_FEATURES)
        arrays = {k: arrays[k] for k in order}
        features = {k: feature_spec(arrays[k], self.feature_names.get(k)) for k in order}
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
        try:
            self._add_videos(videos or {}, lengths)
        except BaseException:
            self.abort()
            raise
        self._arrays.append(arrays)
        self._lengths.append(lengths)
        self._files.append(files)
        self._ep_stats.append({k: given[k] if k in given else stats[k] for k in order})

    def _add_videos(
        self, videos: dict[str, tuple[list[bytes], dict[str, np.ndarray]]], lengths: np.ndarray
    ) -> None:
        """Append each episode's encoded video to its feature's files (in episode order)."""
        if self._lengths and set(videos) != set(self._videos):
            raise LeRobotFormatError(
                f"batch {len(self._lengths)}: videos {sorted(videos)}, but the first batch had "
                f"{sorted(self._videos)}; every batch needs the same video features"
            )
        for key, (mp4s, stats) in videos.items():
            if len(mp4s) != len(lengths):
                raise LeRobotFormatError(
                    f"video {key!r}: {len(mp4s)} encoded episodes for {len(lengths)} episodes"
                )
            if key not in self._videos:
                layout = Layout.new("v3.0", self.chunks_size, videos=True)
                self._videos[key] = VideoFileWriter(
                    self._tmp, key, layout, self.fps, self.video_files_size_in_mb, self.chunks_size
                )
                self._video_features[key] = video_feature(mp4s[0], self.fps)
                self._video_locs[key], self._video_stats[key] = [], []
            for mp4, n in zip(mp4s, lengths, strict=True):
                self._video_locs[key].append(self._videos[key].add(mp4, int(n)))
            self._video_stats[key].append(stats)

    def _wait_for_write(self) -> None:
        """Wait for the batch being encoded; re-raise its error (e.g. disk full)."""
        if self._write_job is not None:
            job, self._write_job = self._write_job, None
            job.result()

    def _start(self, features: dict[str, dict[str, Any]]) -> None:
        new_dir(self._tmp)
        self._features = features
        types = {k: arrow_type(f) for k, f in features.items()}
        self._schema = parquet_schema(types, {k: hf_feature(f) for k, f in features.items()})
        self._data = DataFileWriter(self._tmp, Layout.new("v3.0", self.chunks_size), self._schema)

    def _write_frames(
        self, table: pa.Table, bounds: np.ndarray, files: tuple[np.ndarray, np.ndarray]
    ) -> None:
        """One row group per episode, into the file the plan says."""
        assert self._data is not None
        for e in range(len(bounds) - 1):
            lo, hi = int(bounds[e]), int(bounds[e + 1])
            self._data.write(table.slice(lo, hi - lo), (int(files[0][e]), int(files[1][e])))

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
        # A Ctrl-C inside submit() can leave a thread the pool started but never recorded
        # (interrupted in Thread.start): it may still take the batch and write into the
        # parquet writer, so closing it now crashed the process (SIGSEGV in WriteArrow,
        # seen in a core dump). Wait for every thread of this pool, recorded or not.
        for t in threading.enumerate():
            if t.name.startswith(self._threads + "_") and t is not threading.current_thread():
                t.join()
        if self._data is not None:
            with contextlib.suppress(Exception):
                self._data.close()
        for video in self._videos.values():
            with contextlib.suppress(Exception):
                video.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _finish(self, extra_files: dict[str, str]) -> tuple[int, int, int]:
        assert self._features is not None and self._data is not None
        order = list(self._features)
        lengths = np.concatenate(self._lengths)
        data_files = np.stack([np.concatenate([f[i] for f in self._files]) for i in (0, 1)], 1)

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
        self._data.close()
        global_stats: dict[str, dict[str, np.ndarray]] = {}
        for k in order:
            parts = [j.result() for j in jobs[k]]
            global_stats[k] = {
                s: parts[0][s] if s == "count" else np.concatenate([p[s] for p in parts])
                for s in parts[0]
            }
        episode_stats: dict[str, dict[str, np.ndarray]] = {}
        for k in order:
            ep_stats = [s[k] if isinstance(s[k], dict) else s[k].result() for s in self._ep_stats]
            episode_stats[k] = {st: np.concatenate([s[st] for s in ep_stats]) for st in ep_stats[0]}
        features = dict(self._features)
        videos: dict[str, dict[str, np.ndarray]] = {}
        for key, writer in self._videos.items():
            writer.close()
            locs = np.array(self._video_locs[key], dtype=np.float64)
            videos[key] = {
                "chunk_index": locs[:, 0].astype(np.int64),
                "file_index": locs[:, 1].astype(np.int64),
                "from_timestamp": locs[:, 2],
                "to_timestamp": locs[:, 3],
            }
            batches = self._video_stats[key]
            episode_stats[key] = {st: np.concatenate([b[st] for b in batches]) for st in batches[0]}
            groups = [
                {st: v[e] for st, v in episode_stats[key].items()} for e in range(len(lengths))
            ]
            global_stats[key] = aggregate_stats(groups)
        # video features first, as LeRobot lists cameras before the index columns
        index = [k for k in features if k in INDEX_FEATURES]
        features = {
            **{k: v for k, v in features.items() if k not in INDEX_FEATURES},
            **self._video_features,
            **{k: features[k] for k in index},
        }
        meta = DatasetMeta(
            version="v3.0",
            fps=self.fps,
            features=features,
            tasks=self.tasks,
            lengths=lengths,
            episode_tasks=self._episode_tasks(lengths),
            episode_stats=episode_stats,
            stats=global_stats,
            robot_type=self.robot_type,
            chunks_size=self.chunks_size,
            data_files=data_files,
            data_files_size_in_mb=self.data_files_size_in_mb,
            videos=videos,
            video_files_size_in_mb=self.video_files_size_in_mb,
        )
        write_meta(self._tmp, meta)
        for rel, text in extra_files.items():
            path = self._tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        n_files = len({tuple(x) for x in data_files.tolist()})
        return len(lengths), int(lengths.sum()), n_files

    def _episode_tasks(self, lengths: np.ndarray) -> list[list[str]]:
        """The task strings of each episode, in the order its frames first use them."""
        task_idx = np.concatenate([a["task_index"] for a in self._arrays])
        if int(task_idx.max()) == int(task_idx.min()):  # common case: one task for everything
            return [[self.tasks[int(task_idx[0])]]] * len(lengths)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        out = []
        for e in range(len(lengths)):
            seg = task_idx[bounds[e] : bounds[e + 1]]
            _, first = np.unique(seg, return_index=True)
            out.append([self.tasks[int(seg[i])] for i in sorted(first)])
        return out


def write_dataset(
    root: str | Path,
    data: dict[str, np.ndarray],
    *,
    fps: int,
    tasks: list[str] | None = None,
    feature_names: dict[str, list[str]] | None = None,
    robot_type: str | None = None,
    overwrite: bool = False,
    data_files_size_in_mb: float = DEFAULT_DATA_FILES_SIZE_IN_MB,
    chunks_size: int = DEFAULT_CHUNKS_SIZE,
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
