"""Merge LeRobot datasets (v2.0, v2.1, v3.0, mixed) into one v3.0 (or v2.1) dataset.

Everything is checked before anything is written (fps, features, dims, shapes, missing
files); the output is built in a hidden sibling folder, validated, and renamed into place::

    sources (in order)                     output (v3.0 default)
    A/ v2.1  ep 0..E_A-1   ──┐            out/
    B/ v3.0  ep 0..E_B-1   ──┼──────────▶  ├── meta/info.json        totals, merged features
    C/ v2.0  ...           ──┘             ├── meta/stats.json       pooled / recomputed
                                           ├── meta/tasks.parquet    deduplicated task strings
                                           ├── meta/episodes/...     new indices, stats/*, videos/*
                                           ├── data/chunk-*/file-*   one row group per episode
                                           └── videos/{key}/chunk-*/file-*.mp4  (linked/copied)

Re-indexing: episode ``k`` of the output is the ``k``-th kept episode in source order;
``index`` is the global row position; ``task_index`` is remapped through the task strings;
``frame_index`` and ``timestamp`` are kept. Vector features whose dims differ are zero-padded
to the largest dim (or ``pad_to``) with whole-column numpy operations: a fixed-size-list
column is viewed as a ``(rows, D)`` array, copied into ``(rows, D')`` zeros and wrapped back
into a ``fixed_size_list<dtype>[D']`` without a per-row Python loop.

Statistics: per-episode stats of tabular features are recomputed from the rows (exact, with
quantiles); ``stats.json`` is recomputed exactly from the merged columns when they fit in
``stats_max_mb``, otherwise pooled from the per-episode stats (count-weighted mean, pooled
variance with the between-group term, quantiles as the envelope of the per-episode ones:
min for q <= 50, max above; approximate). Image/video
stats ``(3,1,1)`` come from the sources' metadata and are pooled the same way. The index
columns' stats always describe the merged data.

Videos are never re-encoded: v2.x per-episode mp4 files and whole v3.0 mp4 files are
hard-linked into the output (copied across filesystems or with ``copy``); v3.0
``from_timestamp``/``to_timestamp`` stay valid because a carried file is unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from rlkit.lerobot.reader import (
    DATA_PATH,
    EPISODES_DIR,
    EPISODES_PATH,
    INDEX_FEATURES,
    INFO_PATH,
    LEGACY_DATA_PATH,
    LEGACY_EPISODES_PATH,
    LEGACY_EPISODES_STATS_PATH,
    LEGACY_TASKS_PATH,
    LEGACY_VIDEO_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    LeRobotDataset,
    LeRobotFormatError,
    _column_to_numpy,
    _read_jsonl,
    nonfinite_rows,
    open_dataset,
    parquet_errors,
)
from rlkit.lerobot.stats import BASIC_STATS, aggregate_stats, compute_stats, episode_stats_arrays
from rlkit.lerobot.writer import (
    DEFAULT_VIDEO_FILES_SIZE_IN_MB,
    _list_column,
    check_output,
    plan_files,
    publish_dir,
    remove_stale_temps,
)
from rlkit.utils import available_cores

__all__ = ["MergeConfig", "MergeResult", "merge", "summary_text"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

NUMERIC_DTYPES = frozenset(
    {"bool", "float16", "float32", "float64"}
    | {f"{p}int{b}" for p in ("", "u") for b in (8, 16, 32, 64)}
)
DEFAULT_CHUNKS_SIZE = 1000
DEFAULT_DATA_FILES_SIZE_IN_MB = 100
_MAX_PIECE_ROWS = 262_144  # rows of one source file read at once
_JOB_ROWS = 65_536  # rows converted, summarised and handed to the writer as one job
_MAX_LISTED = 50  # missing files listed one per line before summarising
# Upper bounds of the options, checked before anything is read or allocated.
MAX_PAD_TO = 65_536  # columns of one padded vector feature (--pad-to 1e20 allocated 24 GB)
MAX_WORKERS = 256
MAX_MB = 1_048_576  # 1 TB
MAX_CHUNKS_SIZE = 1_000_000


@dataclass
class MergeConfig:
    """Options of ``merge_lerobot_dataset.py`` (section ``merge`` of config.yml)."""

    sources: list[str] = field(
        default_factory=list,
        metadata={"help": "source dataset folders (v2.0/v2.1/v3.0, mixed), merged in this order"},
    )
    output: str = field(default="data/merged", metadata={"help": "output dataset folder"})
    output_version: Literal["v3.0", "v2.1"] = field(
        default="v3.0", metadata={"help": "codebase version of the output"}
    )
    pad_to: int | None = field(
        default=None,
        metadata={
            "help": "zero-pad every vector feature to this dim (default: pad only features whose "
            "dims differ, to the largest)"
        },
    )
    pad: bool = field(
        default=True,
        metadata={"help": "zero-pad vector dims that differ (--no-pad: make that an error)"},
    )
    skip_missing_videos: bool = field(
        default=False,
        metadata={"help": "drop episodes whose mp4 files are missing (warned) instead of failing"},
    )
    copy: bool = field(
        default=False, metadata={"help": "copy video files instead of hard-linking them"}
    )
    workers: int | None = field(
        default=None, metadata={"help": "threads for file work (default: cores, min 2, cap 8)"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output"})
    validate: bool = field(
        default=True,
        metadata={"help": "validate the merged output before publishing (--no-validate: skip)"},
    )
    stats_max_mb: float = field(
        default=1024.0,
        metadata={
            "help": "recompute stats.json from the merged data up to this many MB of numeric "
            "columns; above, pool per-episode stats"
        },
    )
    data_files_size_in_mb: float | None = field(
        default=None,
        metadata={
            "help": "v3.0 output: new data file past this size (default: first v3.0 source, "
            "else 100)"
        },
    )
    chunks_size: int | None = field(
        default=None,
        metadata={
            "help": "files (v3.0) or episodes (v2.1) per chunk folder (default: first source, "
            "else 1000)"
        },
    )

    def __post_init__(self) -> None:
        # Bounds checked before anything is read or allocated (--pad-to 1e20 reached 24 GB).
        if self.pad_to is not None and self.pad_to < 1:
            raise ValueError(f"pad_to must be >= 1, got {self.pad_to}")
        if self.pad_to is not None and self.pad_to > MAX_PAD_TO:
            raise ValueError(
                f"pad_to must be <= {MAX_PAD_TO} (columns of a padded vector feature, stored "
                f"for every frame), got {self.pad_to}"
            )
        if self.pad_to is not None and not self.pad:
            raise ValueError("--pad-to and --no-pad contradict each other; pass only one of them")
        if self.workers is not None and self.workers < 1:
            raise ValueError(
                f"workers must be >= 1 (or unset for the core count), got {self.workers}"
            )
        if self.workers is not None and self.workers > MAX_WORKERS:
            raise ValueError(f"workers must be <= {MAX_WORKERS} threads, got {self.workers}")
        if not math.isfinite(self.stats_max_mb):
            raise ValueError(f"stats_max_mb must be a finite number, got {self.stats_max_mb}")
        if self.stats_max_mb < 0:
            raise ValueError(f"stats_max_mb must be >= 0, got {self.stats_max_mb}")
        if self.stats_max_mb > MAX_MB:
            raise ValueError(
                f"stats_max_mb must be <= {MAX_MB} (1 TB of merged columns held in memory), "
                f"got {self.stats_max_mb}"
            )
        size = self.data_files_size_in_mb
        if size is not None and not math.isfinite(size):
            raise ValueError(f"data_files_size_in_mb must be a finite number, got {size}")
        if size is not None and not size > 0:
            raise ValueError(f"data_files_size_in_mb must be > 0, got {size}")
        if size is not None and size > MAX_MB:
            raise ValueError(f"data_files_size_in_mb must be <= {MAX_MB} (1 TB), got {size}")
        if self.chunks_size is not None and self.chunks_size < 1:
            raise ValueError(f"chunks_size must be >= 1, got {self.chunks_size}")
        if self.chunks_size is not None and self.chunks_size > MAX_CHUNKS_SIZE:
            raise ValueError(f"chunks_size must be <= {MAX_CHUNKS_SIZE}, got {self.chunks_size}")


@dataclass
class MergeResult:
    """What :func:`merge` did, for the summary and for tests."""

    output: Path
    version: str
    sources: int
    episodes: int
    frames: int
    tasks: int
    data_files: int
    padded: dict[str, tuple[list[int], int]]  # feature -> (dim in each source, merged dim)
    dropped: list[tuple[str, int]]  # (source folder, source episode_index) left out
    videos_linked: int
    videos_copied: int
    exact_stats: bool
    validated: bool
    wall_s: float
    phases_s: dict[str, float] = field(default_factory=dict)  # plan, data, stats+meta, validate

    @property
    def frames_per_s(self) -> float:
        """Merged frames per second of wall time."""
        return self.frames / max(self.wall_s, 1e-9)


# ----------------------------------------------------------------------------- small helpers
def _ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], window: int
) -> Iterator[tuple[T, R]]:
    """``pool.map`` that keeps at most ``window`` items in flight (bounded memory)."""
    it = iter(items)
    pending: deque[tuple[T, Future[R]]] = deque()
    for item in it:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            break
    try:
        while pending:
            item, fut = pending.popleft()
            res = fut.result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(fn, nxt)))
            yield item, res
    finally:
        for _, fut in pending:
            fut.cancel()


def _fmt_list(lines: list[str]) -> str:
    shown = [f"  {x}" for x in lines[:_MAX_LISTED]]
    if len(lines) > _MAX_LISTED:
        shown.append(f"  ... and {len(lines) - _MAX_LISTED} more")
    return "\n".join(shown)


def _extend_names(names: Any, old: int, new: int) -> Any:
    """Extend the per-dimension ``names`` (flat list, nested list or dict) from old to new dims.

    The list of length ``old`` found in the structure gets ``pad_{i}`` entries appended;
    anything else (null, a list of another length) is returned unchanged.
    """
    if isinstance(names, list):
        if len(names) == old and all(not isinstance(n, (list, dict)) for n in names):
            return [*names, *(f"pad_{i}" for i in range(old, new))]
        return [_extend_names(n, old, new) for n in names]
    if isinstance(names, dict):
        return {k: _extend_names(v, old, new) for k, v in names.items()}
    return names


def _image_hwc(shape: list[int]) -> tuple[int, ...]:
    """``[3,H,W]`` or ``[H,W,3]`` -> ``(H, W, C)``, so both conventions compare equal."""
    s = tuple(int(x) for x in shape)
    if len(s) == 3 and s[0] in (1, 3, 4) and s[2] not in (1, 3, 4):
        return (s[1], s[2], s[0])
    return s


def _hf_feature(ft: dict[str, Any]) -> dict[str, Any] | None:
    """The ``datasets`` feature description lerobot stores in the parquet metadata."""
    dtype = ft["dtype"]
    shape = [int(x) for x in ft.get("shape") or [1]]
    if dtype == "image":
        return {"_type": "Image"}
    if dtype == "video":
        return None
    value = {"dtype": dtype, "_type": "Value"}
    if shape == [1]:
        return value
    if len(shape) == 1:
        return {"feature": value, "length": shape[0], "_type": "Sequence"}
    return None


def _nested_list_column(values: np.ndarray) -> pa.Array:
    """``(E, *S)`` array -> nested ``list<...>`` column (images: ``list<list<list<double>>>``)."""
    values = np.ascontiguousarray(values)
    arr: pa.Array = pa.array(values.reshape(-1))
    n_outer = values.shape[0]
    for depth in range(values.ndim - 1, 0, -1):
        width = values.shape[depth]
        count = n_outer * int(np.prod(values.shape[1:depth], dtype=np.int64))
        offsets = pa.array(np.arange(count + 1, dtype=np.int32) * width)
        arr = pa.ListArray.from_arrays(offsets, arr)
    return arr


def _carry_file(src: Path, dst: Path, copy: bool) -> bool:
    """Hard-link ``src`` to ``dst`` (copy across filesystems or when asked); True if linked."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            os.link(src, dst)
            return True
        except OSError:  # EXDEV (other filesystem), EPERM (fs without hard links), ...
            pass
    shutil.copyfile(src, dst)
    return False


# ----------------------------------------------------------------------------- planning
@dataclass
class _Feature:
    key: str
    kind: str  # index | scalar | vector | image | video | string | other
    spec: dict[str, Any]  # output info.json entry
    dims: list[int] = field(default_factory=list)  # vector: dim in each source
    arrow: pa.DataType | None = None  # output parquet type (None for video)

    @property
    def tabular(self) -> bool:
        return self.kind in ("index", "scalar", "vector")


@dataclass
class _Source:
    pos: int
    ds: LeRobotDataset
    files: list[Path]
    file_rows: np.ndarray
    ep_file: np.ndarray  # data file position of each episode (rows of ds.episodes)
    ep_lo: np.ndarray  # first row of each episode inside its data file
    lengths: np.ndarray
    ep_index: np.ndarray  # source episode_index values
    keep: np.ndarray
    task_map: np.ndarray  # source task_index -> merged task_index
    videos: dict[str, list[Path]]  # video key -> file of each episode
    video_ts: dict[str, tuple[np.ndarray, np.ndarray]]  # v3.0: from/to timestamps
    visual_ep_stats: dict[str, dict[str, np.ndarray]]  # key -> stat -> (E, 3, 1, 1)
    schema: pa.Schema

    @property
    def name(self) -> str:
        return str(self.ds.root)


@dataclass
class _Piece:
    """Rows ``[lo, lo + sum(lengths))`` of one source data file: consecutive output episodes."""

    src: int
    file: int
    lo: int
    src_eps: np.ndarray  # rows of the source's episode table
    out_eps: np.ndarray  # merged episode indices
    lengths: np.ndarray
    out_start: int  # merged global row of the first frame
    out_file: tuple[int, int]  # v3.0 (chunk, file); v2.1 unused

    @property
    def rows(self) -> int:
        return int(self.lengths.sum())


@dataclass
class _PieceResult:
    table: pa.Table | None  # v3.0: the job's output rows; v2.1: None (written by the job)
    ep_stats: dict[str, dict[str, np.ndarray]]
    columns: dict[str, np.ndarray]
    lengths: np.ndarray
    out_file: tuple[int, int]
    rows: int


@dataclass
class _Plan:
    sources: list[_Source]
    features: dict[str, _Feature]
    tasks: list[str]
    out_src: np.ndarray  # per merged episode: source position
    out_row: np.ndarray  # per merged episode: row in that source's episode table
    lengths: np.ndarray
    padded: dict[str, tuple[list[int], int]]
    dropped: list[tuple[str, int]]
    schema: pa.Schema
    chunks_size: int
    data_files_size_in_mb: float
    video_files_size_in_mb: float
    robot_type: Any

    @property
    def bounds(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)


def _check_paths(sources: list[Path], output: Path, overwrite: bool) -> None:
    if not sources:
        raise ValueError("sources must name at least one dataset folder, got none; pass --sources")
    out = output.resolve()
    seen: dict[Path, Path] = {}
    for s in sources:
        r = s.resolve()
        if r in seen:
            raise ValueError(f"source {s} is given twice (also as {seen[r]}); list each once")
        seen[r] = s
        if out == r or r in out.parents or out in r.parents:
            raise ValueError(
                f"output {output} overlaps source {s}; choose an --output outside every source"
            )
    check_output(output, overwrite)


def _merge_features(
    dss: list[LeRobotDataset], cfg: MergeConfig
) -> tuple[dict[str, _Feature], dict[str, tuple[list[int], int]]]:
    first = dss[0]
    keys = list(first.features)
    for ds in dss[1:]:
        missing = [k for k in keys if k not in ds.features]
        extra = [k for k in ds.features if k not in first.features]
        if missing or extra:
            raise LeRobotFormatError(
                f"sources must have the same feature keys: {ds.root} lacks {missing} and has "
                f"{extra} compared with {first.root}; rename or drop features so they match"
            )
    out: dict[str, _Feature] = {}
    padded: dict[str, tuple[list[int], int]] = {}
    for key in keys:
        specs = [ds.features[key] for ds in dss]
        dtypes = [str(s.get("dtype")) for s in specs]
        for ds, dt in zip(dss[1:], dtypes[1:], strict=True):
            if dt != dtypes[0]:
                raise LeRobotFormatError(
                    f"feature {key!r} has dtype {dtypes[0]} in {first.root} but {dt} in "
                    f"{ds.root}; convert one source so the dtypes match"
                )
        dtype = dtypes[0]
        spec = json.loads(json.dumps(specs[0]))  # deep copy
        shapes = [[int(x) for x in (s.get("shape") or [1])] for s in specs]
        if key in INDEX_FEATURES:
            out[key] = _Feature(key, "index", spec)
        elif dtype in ("image", "video"):
            norm = [_image_hwc(s) for s in shapes]
            for ds, sh, nm in zip(dss, shapes, norm, strict=True):
                if nm != norm[0]:
                    raise LeRobotFormatError(
                        f"{dtype} feature {key!r} has shape {shapes[0]} in {first.root} but {sh} "
                        f"in {ds.root}; image/video shapes must match (resize one source)"
                    )
                if sh != shapes[0]:
                    logger.info(
                        "%s: %r shape %s vs %s in %s (same image, other axis order); output "
                        "uses %s",
                        first.root,
                        key,
                        shapes[0],
                        sh,
                        ds.root,
                        shapes[0],
                    )
            out[key] = _Feature(key, dtype, spec)
        elif dtype in NUMERIC_DTYPES and all(len(s) == 1 for s in shapes):
            dims = [s[0] for s in shapes]
            if max(dims) == 1:
                out[key] = _Feature(key, "scalar", spec, dims)
                continue
            target = cfg.pad_to or max(dims)
            if len(set(dims)) > 1 and not cfg.pad:
                detail = ", ".join(f"{ds.root}: {d}" for ds, d in zip(dss, dims, strict=True))
                raise LeRobotFormatError(
                    f"feature {key!r} has different dims ({detail}) and --no-pad is set; drop "
                    "--no-pad to zero-pad to the largest dim"
                )
            if target < max(dims):
                worst = dss[int(np.argmax(dims))].root
                raise LeRobotFormatError(
                    f"--pad-to {target} is smaller than feature {key!r}'s dim {max(dims)} in "
                    f"{worst}; pass --pad-to >= {max(dims)}"
                )
            widest = int(np.argmax(dims))
            spec = json.loads(json.dumps(specs[widest]))
            spec["shape"] = [target]
            if target != dims[widest]:
                spec["names"] = _extend_names(spec.get("names"), dims[widest], target)
            if min(dims) < target:
                padded[key] = (dims, target)
            out[key] = _Feature(key, "vector", spec, dims)
        elif dtype == "string":
            out[key] = _Feature(key, "string", spec)
        else:
            for ds, sh in zip(dss, shapes, strict=True):
                if sh != shapes[0]:
                    raise LeRobotFormatError(
                        f"feature {key!r} has shape {shapes[0]} in {first.root} but {sh} in "
                        f"{ds.root}; only 1-D vectors can be padded, make the shapes match"
                    )
            out[key] = _Feature(key, "other", spec)
        if key in out and out[key].kind in ("index", "scalar", "vector"):
            out[key].spec["shape"] = out[key].spec.get("shape") or [1]
    for key in INDEX_FEATURES:
        if key not in out:
            raise LeRobotFormatError(
                f"{first.root / INFO_PATH} lacks the index feature {key!r}; every LeRobot dataset "
                f"has {list(INDEX_FEATURES)}"
            )
    for ds in dss[1:]:
        if ds.info.get("robot_type") != first.info.get("robot_type"):
            logger.warning(
                "robot_type differs: %r in %s, %r in %s; the output keeps %r",
                first.info.get("robot_type"),
                first.root,
                ds.info.get("robot_type"),
                ds.root,
                first.info.get("robot_type"),
            )
        for key, ft in out.items():
            if ft.kind == "vector" and key not in padded:
                a, b = first.features[key].get("names"), ds.features[key].get("names")
                if a != b:
                    logger.warning(
                        "feature %r has different names in %s and %s; the output keeps %s's",
                        key,
                        first.root,
                        ds.root,
                        first.root,
                    )
    return out, padded


def _arrow_type(ft: _Feature, schemas: list[pa.Schema]) -> pa.DataType | None:
    dtype = ft.spec["dtype"]
    if ft.kind == "video":
        return None
    if ft.kind in ("index", "scalar"):
        return pa.from_numpy_dtype(np.dtype(dtype))
    if ft.kind == "vector":
        return pa.list_(pa.from_numpy_dtype(np.dtype(dtype)), int(ft.spec["shape"][0]))
    if ft.kind == "image":  # what lerobot's datasets.Image feature writes
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if ft.kind == "string":
        return pa.string()
    for schema in schemas:  # other: the first source's parquet type
        if ft.key in schema.names:
            return schema.field(ft.key).type
    raise LeRobotFormatError(f"no data file has a column {ft.key!r}")


def _file_meta(path: Path) -> tuple[int, list[str]] | None:
    if not path.is_file():
        return None
    with parquet_errors(path):
        md = pq.read_metadata(path)
        return md.num_rows, md.schema.to_arrow_schema().names


def _visual_episode_stats(ds: LeRobotDataset, keys: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Per-episode image/video stats from the source metadata (rows of ``ds.episodes``)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    if not keys:
        return out
    n = ds.num_episodes
    if ds.version == "v3.0":
        files = sorted((ds.root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        for key in keys:
            tables = []
            for f in files:
                with parquet_errors(f):
                    cols = [c for c in pq.read_schema(f).names if c.startswith(f"stats/{key}/")]
                    tables.append(pq.read_table(f, columns=cols))
            names = set.intersection(*(set(t.column_names) for t in tables)) if tables else set()
            stats = {}
            for col in sorted(names):
                parts = [_column_to_numpy(t.column(col), col, ds.root) for t in tables]
                stats[col.rsplit("/", 1)[1]] = np.concatenate(parts).astype(np.float64)
            if {"mean", "std", "count"} <= set(stats) and len(stats["count"]) == n:
                out[key] = stats
        return out
    path = ds.root / LEGACY_EPISODES_STATS_PATH
    if not path.is_file():
        return out
    by_ep = {int(r["episode_index"]): r.get("stats", {}) for r in _read_jsonl(path)}
    for key in keys:
        rows = [by_ep.get(int(e), {}).get(key) for e in ds.episodes["episode_index"]]
        if any(r is None for r in rows):
            continue
        common = set.intersection(*(set(r) for r in rows))
        if {"mean", "std", "count"} <= common:
            out[key] = {s: np.array([r[s] for r in rows], dtype=np.float64) for s in common}
    return out


def _plan(dss: list[LeRobotDataset], cfg: MergeConfig, pool: ThreadPoolExecutor) -> _Plan:
    """Check every source and decide the whole output; raises before anything is written."""
    first = dss[0]
    for ds in dss[1:]:
        if ds.fps != first.fps:
            raise LeRobotFormatError(
                f"sources must share one fps: {first.root} has fps={first.fps}, {ds.root} has "
                f"fps={ds.fps}; resample one of them first"
            )
    features, padded = _merge_features(dss, cfg)
    video_keys = [k for k, f in features.items() if f.kind == "video"]
    visual_keys = [k for k, f in features.items() if f.kind in ("image", "video")]

    # ---- tasks: deduplicated strings, first appearance in source order
    tasks: list[str] = []
    where: dict[str, int] = {}
    task_maps = []
    for ds in dss:
        for t in ds.tasks:
            if t not in where:
                where[t] = len(tasks)
                tasks.append(t)
        task_maps.append(np.array([where[t] for t in ds.tasks], dtype=np.int64))
        unknown = sorted({t for ts in ds.episodes["tasks"] for t in ts} - set(ds.tasks))
        if unknown:
            raise LeRobotFormatError(
                f"{ds.root}: episodes reference tasks missing from its tasks table: {unknown[:5]}; "
                "add them to the tasks file"
            )

    # ---- data files: present, row counts, columns
    all_files = [ds.data_files() for ds in dss]
    flat = [f for files in all_files for f in files]
    metas = list(pool.map(_file_meta, flat))
    missing = [str(f) for f, m in zip(flat, metas, strict=True) if m is None]
    missing_videos: list[tuple[int, str, int, str]] = []  # (source, key, episode row, path)
    sources: list[_Source] = []
    problems: list[str] = []
    k = 0
    for pos, (ds, files) in enumerate(zip(dss, all_files, strict=True)):
        file_metas = metas[k : k + len(files)]
        k += len(files)
        eps = ds.episodes
        lengths = eps["length"].to_numpy().astype(np.int64)
        from_idx = eps["dataset_from_index"].to_numpy().astype(np.int64)
        file_rows = np.array([m[0] if m else 0 for m in file_metas], dtype=np.int64)
        needed = [key for key, ft in features.items() if ft.kind != "video"]
        for f, m in zip(files, file_metas, strict=True):
            if m is None:
                continue
            absent = [key for key in needed if key not in m[1]]
            if absent:
                problems.append(f"{f} lacks column(s) {absent} declared in {ds.root / INFO_PATH}")
        if ds.version == "v3.0":
            starts = np.concatenate([[0], np.cumsum(file_rows)[:-1]])
            ep_file = np.searchsorted(starts, from_idx, side="right") - 1
            ep_lo = from_idx - starts[ep_file]
            if all(m is not None for m in file_metas):
                over = ep_lo + lengths > file_rows[ep_file]
                if file_rows.sum() != lengths.sum() or over.any():
                    problems.append(
                        f"{ds.root}: data files hold {int(file_rows.sum())} rows but the episode "
                        f"metadata describes {int(lengths.sum())} (or an episode spans files); "
                        "the episode table and the data disagree"
                    )
        else:
            ep_file = np.arange(len(files))
            ep_lo = np.zeros(len(files), dtype=np.int64)
            bad = [
                f"{f} has {r} rows but {ds.root / LEGACY_EPISODES_PATH} says length {n}"
                for f, m, r, n in zip(files, file_metas, file_rows, lengths, strict=True)
                if m is not None and r != n
            ]
            problems.extend(bad[:_MAX_LISTED])
        first_file = next((f for f, m in zip(files, file_metas, strict=True) if m), None)
        schema = pa.schema([])
        if first_file is not None:
            with parquet_errors(first_file):
                schema = pq.read_schema(first_file)
        # ---- videos
        videos: dict[str, list[Path]] = {}
        video_ts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        pattern = ds.info.get("video_path")
        if video_keys and not pattern:
            raise LeRobotFormatError(
                f"{ds.root / INFO_PATH}: video features {video_keys} but video_path is null; "
                "set video_path"
            )
        for key in video_keys:
            if ds.version == "v3.0":
                cols = [f"videos/{key}/{c}" for c in ("chunk_index", "file_index")]
                ts_cols = [f"videos/{key}/{c}" for c in ("from_timestamp", "to_timestamp")]
                absent = [c for c in cols + ts_cols if c not in eps.columns]
                if absent:
                    raise LeRobotFormatError(
                        f"{ds.root}: episode metadata lacks {absent} for video {key!r}; the "
                        "dataset's video index is incomplete"
                    )
                paths = [
                    ds.root / pattern.format(video_key=key, chunk_index=int(c), file_index=int(f))
                    for c, f in zip(eps[cols[0]], eps[cols[1]], strict=True)
                ]
                video_ts[key] = (
                    eps[ts_cols[0]].to_numpy(np.float64),
                    eps[ts_cols[1]].to_numpy(np.float64),
                )
            else:
                cs = int(ds.info.get("chunks_size", DEFAULT_CHUNKS_SIZE))
                paths = [
                    ds.root
                    / pattern.format(
                        episode_chunk=int(e) // cs, video_key=key, episode_index=int(e)
                    )
                    for e in eps["episode_index"]
                ]
            videos[key] = paths
        sources.append(
            _Source(
                pos=pos,
                ds=ds,
                files=files,
                file_rows=file_rows,
                ep_file=ep_file.astype(np.int64),
                ep_lo=ep_lo.astype(np.int64),
                lengths=lengths,
                ep_index=eps["episode_index"].to_numpy().astype(np.int64),
                keep=np.ones(len(eps), dtype=bool),
                task_map=task_maps[pos],
                videos=videos,
                video_ts=video_ts,
                visual_ep_stats={},
                schema=schema,
            )
        )
    if missing:
        raise LeRobotFormatError(
            f"{len(missing)} data file(s) referenced by the sources do not exist:\n"
            f"{_fmt_list(missing)}\nrestore them (a merger never substitutes another file)"
        )
    if problems:
        raise LeRobotFormatError("sources are inconsistent:\n" + _fmt_list(problems))

    # ---- missing videos: error listing every one, or drop those episodes
    exists_cache: dict[Path, bool] = {}
    unique = sorted({p for s in sources for ps in s.videos.values() for p in ps})
    for p, ok in zip(unique, pool.map(Path.is_file, unique), strict=True):
        exists_cache[p] = ok
    for s in sources:
        for key, paths in s.videos.items():
            for row, p in enumerate(paths):
                if not exists_cache[p]:
                    missing_videos.append((s.pos, key, row, str(p)))
    dropped: list[tuple[str, int]] = []
    if missing_videos:
        listed = sorted({m[3] for m in missing_videos})
        if not cfg.skip_missing_videos:
            raise LeRobotFormatError(
                f"{len(listed)} video file(s) referenced by the sources do not exist:\n"
                f"{_fmt_list(listed)}\nrestore them, or pass --skip-missing-videos to drop "
                "those episodes (a merger never substitutes another episode's video)"
            )
        for pos, _key, row, _p in missing_videos:
            sources[pos].keep[row] = False
        for s in sources:
            for row in np.flatnonzero(~s.keep):
                dropped.append((s.name, int(s.ep_index[row])))
        logger.warning(
            "--skip-missing-videos: dropping %d episode(s) with missing video files:\n%s",
            len(dropped),
            _fmt_list([f"{src} episode {ep}" for src, ep in dropped]),
        )
    if cfg.output_version == "v2.1":
        _check_v21_videos(sources)

    # ---- output episodes and parquet schema
    out_src = np.concatenate([np.full(int(s.keep.sum()), s.pos, dtype=np.int64) for s in sources])
    out_row = np.concatenate([np.flatnonzero(s.keep).astype(np.int64) for s in sources])
    if len(out_src) == 0:
        raise LeRobotFormatError("no episodes left to merge (every episode was dropped)")
    lengths = np.concatenate([s.lengths[s.keep] for s in sources])
    schemas = [s.schema for s in sources]
    for ft in features.values():
        ft.arrow = _arrow_type(ft, schemas)
    hf: dict[str, Any] = {}
    for key, ft in features.items():
        desc = _hf_feature(ft.spec) if ft.kind in ("index", "scalar", "vector") else None
        if desc is None and ft.kind not in ("video",):
            desc = _source_hf(schemas, key) or _hf_feature(ft.spec)
        if desc is not None:
            hf[key] = desc
    schema = pa.schema(
        [pa.field(k, ft.arrow) for k, ft in features.items() if ft.arrow is not None],
        metadata={"huggingface": json.dumps({"info": {"features": hf}})},
    )
    for s in sources:
        s.visual_ep_stats = _visual_episode_stats(s.ds, visual_keys)

    v3 = [ds for ds in dss if ds.version == "v3.0"]
    chunks_size = cfg.chunks_size or int(dss[0].info.get("chunks_size", DEFAULT_CHUNKS_SIZE))
    size_mb = cfg.data_files_size_in_mb or float(
        v3[0].info.get("data_files_size_in_mb", DEFAULT_DATA_FILES_SIZE_IN_MB)
        if v3
        else DEFAULT_DATA_FILES_SIZE_IN_MB
    )
    video_mb = float(
        v3[0].info.get("video_files_size_in_mb", DEFAULT_VIDEO_FILES_SIZE_IN_MB)
        if v3
        else DEFAULT_VIDEO_FILES_SIZE_IN_MB
    )
    return _Plan(
        sources=sources,
        features=features,
        tasks=tasks,
        out_src=out_src,
        out_row=out_row,
        lengths=lengths,
        padded=padded,
        dropped=dropped,
        schema=schema,
        chunks_size=chunks_size,
        data_files_size_in_mb=size_mb,
        video_files_size_in_mb=video_mb,
        robot_type=dss[0].info.get("robot_type"),
    )


def _source_hf(schemas: list[pa.Schema], key: str) -> dict[str, Any] | None:
    for schema in schemas:
        raw = (schema.metadata or {}).get(b"huggingface")
        if raw:
            try:
                desc = json.loads(raw)["info"]["features"].get(key)
            except (ValueError, KeyError, TypeError):
                continue
            if desc is not None:
                return desc
    return None


def _check_v21_videos(sources: list[_Source]) -> None:
    """v2.1 wants one mp4 per episode: a v3.0 file may be carried only if it holds one episode."""
    bad: list[str] = []
    for s in sources:
        if s.ds.version != "v3.0":
            continue
        for key, paths in s.videos.items():
            users: dict[Path, int] = {}
            for p in paths:
                users[p] = users.get(p, 0) + 1
            start = s.video_ts[key][0]
            for row, p in enumerate(paths):
                if s.keep[row] and (users[p] > 1 or abs(start[row]) > 1e-6):
                    bad.append(f"{p} ({key}, episode {int(s.ep_index[row])})")
    if bad:
        raise LeRobotFormatError(
            "--output-version v2.1 needs one mp4 per episode, but these v3.0 video files hold "
            f"several episodes (splitting them would mean re-encoding):\n{_fmt_list(bad)}\n"
            "merge to --output-version v3.0 instead"
        )


# ----------------------------------------------------------------------------- data work
def _pieces(plan: _Plan, out_file: np.ndarray | None) -> list[_Piece]:
    """Group consecutive merged episodes that are adjacent rows of one source file."""
    pieces: list[_Piece] = []
    bounds = plan.bounds
    cur: list[int] = []

    def flush() -> None:
        if not cur:
            return
        e0 = cur[0]
        s = plan.sources[int(plan.out_src[e0])]
        rows = plan.out_row[cur]
        pieces.append(
            _Piece(
                src=s.pos,
                file=int(s.ep_file[rows[0]]),
                lo=int(s.ep_lo[rows[0]]),
                src_eps=rows,
                out_eps=np.array(cur, dtype=np.int64),
                lengths=plan.lengths[cur],
                out_start=int(bounds[e0]),
                out_file=tuple(out_file[e0]) if out_file is not None else (0, 0),
            )
        )
        cur.clear()

    n_rows = 0
    for e in range(len(plan.out_src)):
        if cur:
            p = cur[-1]
            s = plan.sources[int(plan.out_src[p])]
            same = (
                plan.out_src[e] == plan.out_src[p]
                and s.ep_file[plan.out_row[e]] == s.ep_file[plan.out_row[p]]
                and s.ep_lo[plan.out_row[e]]
                == s.ep_lo[plan.out_row[p]] + s.lengths[plan.out_row[p]]
                and (out_file is None or tuple(out_file[e]) == tuple(out_file[p]))
                and n_rows + plan.lengths[e] <= _MAX_PIECE_ROWS
            )
            if not same:
                flush()
                n_rows = 0
        cur.append(e)
        n_rows += int(plan.lengths[e])
    flush()
    return pieces


def _read_rows(path: Path, lo: int, n: int) -> pa.Table:
    """Rows ``[lo, lo + n)`` of a parquet file, reading only the row groups that hold them."""
    with parquet_errors(path), pq.ParquetFile(path) as pf:
        md = pf.metadata
        if lo == 0 and n == md.num_rows:
            return pf.read()
        rg_rows = np.array([md.row_group(i).num_rows for i in range(md.num_row_groups)])
        rg_start = np.concatenate([[0], np.cumsum(rg_rows)])
        first = int(np.searchsorted(rg_start, lo, side="right") - 1)
        last = int(np.searchsorted(rg_start, lo + n, side="left"))
        table = pf.read_row_groups(list(range(first, last)))
    return table.slice(lo - int(rg_start[first]), n)


def _convert(
    col: pa.ChunkedArray, ft: _Feature, src_dim: int, path: Path
) -> tuple[pa.ChunkedArray | pa.Array, np.ndarray | None]:
    """One source column -> (output column, numpy values for stats or None)."""
    if ft.kind not in ("index", "scalar", "vector"):
        if col.type == ft.arrow:
            return col, None
        try:
            return col.cast(ft.arrow), None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise LeRobotFormatError(
                f"{path}: column {ft.key!r} of type {col.type} cannot be converted to the merged "
                f"type {ft.arrow} ({e}); make the sources store it the same way"
            ) from e
    arr = _column_to_numpy(col, ft.key, path)
    np_dtype = np.dtype(ft.spec["dtype"])
    if ft.kind != "vector":
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise LeRobotFormatError(
                f"{path}: column {ft.key!r} holds {arr.shape[1:]} values per frame but info.json "
                "declares shape [1]; fix the feature shape"
            )
        arr = arr.astype(np_dtype, copy=False)
        return (col if col.type == ft.arrow else pa.array(arr)), arr
    if arr.ndim == 1:
        arr = arr[:, None]
    n, width = arr.shape[0], int(ft.spec["shape"][0])
    if arr.ndim != 2 or arr.shape[1] != src_dim:
        raise LeRobotFormatError(
            f"{path}: column {ft.key!r} holds {arr.shape[1:]} values per frame but its info.json "
            f"declares shape [{src_dim}]; fix the feature shape"
        )
    if col.type == ft.arrow:
        return col, arr.astype(np_dtype, copy=False)
    if src_dim < width:
        # Vectorised padding: one (rows, D') block, the whole (rows, D) column copied in.
        out = np.zeros((n, width), dtype=np_dtype)
        out[:, :src_dim] = arr
    else:
        out = np.ascontiguousarray(arr, dtype=np_dtype)
    values = pa.FixedSizeListArray.from_arrays(pa.array(out.reshape(-1)), width)
    return values, out


def _is_float(ft: _Feature) -> bool:
    try:
        return np.dtype(str(ft.spec.get("dtype"))).kind == "f"
    except TypeError:  # image/video/string
        return False


def _check_finite(
    values: np.ndarray | pa.ChunkedArray | pa.Array, ft: _Feature, path: Path, lo: int
) -> None:
    """Refuse NaN/inf in a float feature of a source (rows ``lo..`` of ``path``): merged, they
    would make the pooled stats NaN and every normalised frame with them."""
    if isinstance(values, np.ndarray):
        bad = nonfinite_rows(values)
        count, where = len(bad), f" (first at row {lo + int(bad[0])})" if len(bad) else ""
    else:  # nested lists of another shape: count the flat values
        flat = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        while pa.types.is_list(flat.type) or pa.types.is_fixed_size_list(flat.type):
            flat = flat.flatten()
        arr = flat.to_numpy(zero_copy_only=False)
        count = int(arr.size - np.isfinite(arr).sum()) if arr.dtype.kind == "f" else 0
        where = ""
    if count:
        raise LeRobotFormatError(
            f"{path}: feature {ft.key!r} holds NaN/inf in {count} row(s){where}; clean or drop "
            "those frames before merging"
        )


def _jobs(pieces: list[_Piece]) -> list[list[_Piece]]:
    """Batch consecutive pieces (same output file) into thread-pool jobs of ~_JOB_ROWS rows.

    Per-episode stats then run once per job: a few numpy calls over many small episodes
    instead of a few per episode (v2.x sources are one small file per episode).
    """
    jobs: list[list[_Piece]] = []
    rows = 0
    for p in pieces:
        if jobs and jobs[-1][-1].out_file == p.out_file and rows + p.rows <= _JOB_ROWS:
            jobs[-1].append(p)
            rows += p.rows
        else:
            jobs.append([p])
            rows = p.rows
    return jobs


def _make_loader(
    plan: _Plan, keep_columns: set[str], out_root: Path, version: str
) -> Callable[[list[_Piece]], _PieceResult]:
    feats = plan.features
    tabular = [k for k, f in feats.items() if f.tabular]
    chunks_size = plan.chunks_size
    dict_cols = _dict_columns(plan.schema)

    def convert(piece: _Piece) -> tuple[pa.Table, dict[str, np.ndarray]]:
        """Read one piece and turn it into output rows; numpy values of tabular columns."""
        s = plan.sources[piece.src]
        path = s.files[piece.file]
        n = piece.rows
        table = _read_rows(path, piece.lo, n)
        # ---- index columns: new episode/global indices, remapped tasks, kept frame/timestamp
        src_ep = _column_to_numpy(table.column("episode_index"), "episode_index", path)
        expected = np.repeat(s.ep_index[piece.src_eps], piece.lengths)
        if not np.array_equal(src_ep, expected):
            row = int(np.flatnonzero(src_ep != expected)[0])
            raise LeRobotFormatError(
                f"{path}: row {piece.lo + row} has episode_index {src_ep[row]} but the episode "
                f"metadata of {s.name} places episode {expected[row]} there; the data and "
                "episode table disagree"
            )
        src_task = _column_to_numpy(table.column("task_index"), "task_index", path)
        bad = (src_task < 0) | (src_task >= len(s.task_map))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise LeRobotFormatError(
                f"{path}: row {piece.lo + row} has task_index {src_task[row]}, not in "
                f"{s.name}'s tasks table (0..{len(s.task_map) - 1}); fix the tasks file"
            )
        values: dict[str, np.ndarray] = {
            "episode_index": np.repeat(piece.out_eps, piece.lengths),
            "index": np.arange(piece.out_start, piece.out_start + n, dtype=np.int64),
            "task_index": s.task_map[src_task],
        }
        columns: list[pa.ChunkedArray] = []
        for key, ft in feats.items():
            if ft.kind == "video":
                continue
            if key in values:
                col: Any = pa.array(values[key].astype(ft.spec["dtype"], copy=False))
            else:
                src_dim = ft.dims[piece.src] if ft.kind == "vector" else 1
                col, arr = _convert(table.column(key), ft, src_dim, path)
                if arr is not None:
                    values[key] = arr
                if _is_float(ft):
                    _check_finite(arr if arr is not None else col, ft, path, piece.lo)
            columns.append(col if isinstance(col, pa.ChunkedArray) else pa.chunked_array([col]))
        return pa.Table.from_arrays(columns, schema=plan.schema), values

    def load(job: list[_Piece]) -> _PieceResult:
        parts = [convert(p) for p in job]
        table = pa.concat_tables([t for t, _ in parts]) if len(parts) > 1 else parts[0][0]
        values = {
            k: np.concatenate([v[k] for _, v in parts]) if len(parts) > 1 else parts[0][1][k]
            for k in tabular
        }
        lengths = np.concatenate([p.lengths for p in job])
        local = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ep_stats = {k: episode_stats_arrays(values[k], local) for k in tabular}
        out: pa.Table | None = table
        if version == "v2.1":
            out_eps = np.concatenate([p.out_eps for p in job])
            for j, ep in enumerate(out_eps.tolist()):
                rel = LEGACY_DATA_PATH.format(episode_chunk=ep // chunks_size, episode_index=ep)
                dst = out_root / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(
                    table.slice(int(local[j]), int(lengths[j])), dst, use_dictionary=dict_cols
                )
            out = None
        kept = {k: values[k] for k in keep_columns}
        return _PieceResult(out, ep_stats, kept, lengths, job[0].out_file, int(local[-1]))

    return load


def _dict_columns(schema: pa.Schema) -> list[str]:
    # Dictionary encoding pays off only for low-cardinality columns (as in the writer).
    return [
        f.name
        for f in schema
        if f.name in ("episode_index", "task_index") or pa.types.is_boolean(f.type)
    ]


# ----------------------------------------------------------------------------- stats
def _pool_visual(
    plan: _Plan, key: str
) -> tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]:
    """(per-episode stats of the merged episodes or None, dataset stats or None)."""
    per_ep = []
    groups = []
    for s in plan.sources:
        if not s.keep.any():
            continue
        eps = s.visual_ep_stats.get(key)
        if eps is not None:
            per_ep.append({k: v[s.keep] for k, v in eps.items()})
        if s.keep.all() and (s.ds.root / STATS_PATH).is_file():
            st = s.ds.stats([key]).get(key)  # raises naming the file if a value is NaN/inf
            if st is not None and {"mean", "std", "count"} <= set(st):
                groups.append(st)
                continue
        if eps is not None:
            kept = {k: v[s.keep] for k, v in eps.items()}
            groups.append(
                aggregate_stats(
                    [{k: v[i] for k, v in kept.items()} for i in range(len(kept["count"]))]
                )
            )
        else:
            logger.warning(
                "%s has no stats for %r; the merged stats of %r describe the other sources only",
                s.name,
                key,
                key,
            )
    sources_with = sum(1 for s in plan.sources if s.keep.any() and key in s.visual_ep_stats)
    sources_used = sum(1 for s in plan.sources if s.keep.any())
    episode_stats = None
    if per_ep and sources_with == sources_used:
        common = set.intersection(*(set(p) for p in per_ep))
        episode_stats = {k: np.concatenate([p[k] for p in per_ep]) for k in sorted(common)}
    dataset = aggregate_stats(groups) if groups else None
    if dataset is not None:
        for name in list(dataset):
            if name != "count":
                dataset[name] = dataset[name].reshape(dataset["mean"].shape)
    return episode_stats, dataset


def _global_stats(
    plan: _Plan,
    ep_stats: dict[str, dict[str, np.ndarray]],
    columns: dict[str, list[np.ndarray]],
    pool: ThreadPoolExecutor,
) -> dict[str, dict[str, np.ndarray]]:
    jobs: dict[str, Future[dict[str, np.ndarray]]] = {}
    for key, cols in columns.items():
        jobs[key] = pool.submit(lambda c=cols: compute_stats(np.concatenate(c)))
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, ft in plan.features.items():
        if not ft.tabular:
            continue
        if key in jobs:
            out[key] = jobs[key].result()
        else:
            st = ep_stats[key]
            groups = [{k: v[i] for k, v in st.items()} for i in range(len(st["count"]))]
            out[key] = aggregate_stats(groups)
        if ft.spec.get("shape") == [1] or ft.kind != "vector":
            out[key] = {k: np.asarray(v).reshape(-1) for k, v in out[key].items()}
    return out


def _json_stats(stats: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


# ----------------------------------------------------------------------------- writing
def _write_videos(
    plan: _Plan, tmp: Path, version: str, copy: bool, pool: ThreadPoolExecutor
) -> tuple[dict[str, dict[str, np.ndarray]], int, int]:
    """Carry every needed mp4 into ``tmp``; return the v3.0 ``videos/*`` episode columns."""
    columns: dict[str, dict[str, np.ndarray]] = {}
    jobs: list[tuple[Path, Path]] = []
    n_eps = len(plan.out_src)
    for key, ft in plan.features.items():
        if ft.kind != "video":
            continue
        chunk = np.zeros(n_eps, dtype=np.int64)
        file = np.zeros(n_eps, dtype=np.int64)
        t_from = np.zeros(n_eps, dtype=np.float64)
        t_to = np.zeros(n_eps, dtype=np.float64)
        assigned: dict[Path, tuple[int, int]] = {}
        for e in range(n_eps):
            s = plan.sources[int(plan.out_src[e])]
            row = int(plan.out_row[e])
            src = s.videos[key][row]
            if version == "v2.1":
                cs = plan.chunks_size
                rel = LEGACY_VIDEO_PATH.format(
                    episode_chunk=e // cs, video_key=key, episode_index=e
                )
                jobs.append((src, tmp / rel))
                continue
            if src not in assigned:
                n = len(assigned)
                assigned[src] = (n // plan.chunks_size, n % plan.chunks_size)
                c, f = assigned[src]
                jobs.append(
                    (src, tmp / VIDEO_PATH.format(video_key=key, chunk_index=c, file_index=f))
                )
            chunk[e], file[e] = assigned[src]
            if s.ds.version == "v3.0":
                t_from[e], t_to[e] = s.video_ts[key][0][row], s.video_ts[key][1][row]
            else:
                t_to[e] = plan.lengths[e] / s.ds.fps
        columns[key] = {
            "chunk_index": chunk,
            "file_index": file,
            "from_timestamp": t_from,
            "to_timestamp": t_to,
        }
    linked = sum(pool.map(lambda j: _carry_file(j[0], j[1], copy), jobs))
    return columns, linked, len(jobs) - linked


def _write_meta_v3(
    plan: _Plan,
    tmp: Path,
    out_file: np.ndarray,
    ep_stats: dict[str, dict[str, np.ndarray]],
    visual: dict[str, tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]],
    video_cols: dict[str, dict[str, np.ndarray]],
    global_stats: dict[str, dict[str, Any]],
) -> None:
    n_eps = len(plan.out_src)
    bounds = plan.bounds
    ep_tasks = [
        list(plan.sources[int(s)].ds.episodes["tasks"].iloc[int(r)])
        for s, r in zip(plan.out_src, plan.out_row, strict=True)
    ]
    episodes: dict[str, pa.Array] = {
        "episode_index": pa.array(np.arange(n_eps, dtype=np.int64)),
        "tasks": pa.array(ep_tasks, type=pa.list_(pa.string())),
        "length": pa.array(plan.lengths),
        "data/chunk_index": pa.array(out_file[:, 0]),
        "data/file_index": pa.array(out_file[:, 1]),
        "dataset_from_index": pa.array(bounds[:-1]),
        "dataset_to_index": pa.array(bounds[1:]),
    }
    for key, cols in video_cols.items():
        for name, values in cols.items():
            episodes[f"videos/{key}/{name}"] = pa.array(values)
    for key, ft in plan.features.items():
        if ft.tabular:
            for stat, values in ep_stats[key].items():
                episodes[f"stats/{key}/{stat}"] = _list_column(values.reshape(n_eps, -1))
        elif key in visual and visual[key][0] is not None:
            for stat, values in visual[key][0].items():
                col = values.astype(np.int64) if stat == "count" else values
                if stat == "count":
                    episodes[f"stats/{key}/{stat}"] = _list_column(col.reshape(n_eps, -1))
                else:
                    episodes[f"stats/{key}/{stat}"] = _nested_list_column(col)
    zeros = np.zeros(n_eps, dtype=np.int64)
    episodes["meta/episodes/chunk_index"] = pa.array(zeros)
    episodes["meta/episodes/file_index"] = pa.array(zeros)
    ep_path = tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(episodes), ep_path)
    pd.DataFrame(
        {"task_index": np.arange(len(plan.tasks), dtype=np.int64)},
        index=pd.Index(plan.tasks, name="task"),
    ).to_parquet(tmp / TASKS_PATH)
    size = plan.data_files_size_in_mb
    info = _info_common(plan) | {
        "codebase_version": "v3.0",
        "chunks_size": plan.chunks_size,
        "data_files_size_in_mb": int(size) if float(size).is_integer() else size,
        "video_files_size_in_mb": plan.video_files_size_in_mb,
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video_cols else None,
    }
    _write_json(tmp / STATS_PATH, global_stats)
    _write_json(tmp / INFO_PATH, _order_info(info, plan))


def _write_meta_v21(
    plan: _Plan,
    tmp: Path,
    ep_stats: dict[str, dict[str, np.ndarray]],
    visual: dict[str, tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]],
    global_stats: dict[str, dict[str, Any]],
) -> None:
    n_eps = len(plan.out_src)
    lines_ep, lines_stats = [], []
    per_key: dict[str, dict[str, np.ndarray]] = {}
    for key, ft in plan.features.items():
        if ft.tabular:
            per_key[key] = ep_stats[key]
        elif key in visual and visual[key][0] is not None:
            per_key[key] = visual[key][0]
    for e in range(n_eps):
        s = plan.sources[int(plan.out_src[e])]
        tasks = list(s.ds.episodes["tasks"].iloc[int(plan.out_row[e])])
        lines_ep.append(
            json.dumps({"episode_index": e, "tasks": tasks, "length": int(plan.lengths[e])})
        )
        stats = {
            key: {
                stat: (v[e].astype(np.int64) if stat == "count" else v[e]).tolist()
                for stat, v in st.items()
                if stat in BASIC_STATS
            }
            for key, st in per_key.items()
        }
        lines_stats.append(json.dumps({"episode_index": e, "stats": stats}))
    (tmp / LEGACY_EPISODES_PATH).write_text("\n".join(lines_ep) + "\n", encoding="utf-8")
    (tmp / LEGACY_EPISODES_STATS_PATH).write_text("\n".join(lines_stats) + "\n", encoding="utf-8")
    (tmp / LEGACY_TASKS_PATH).write_text(
        "".join(
            json.dumps({"task_index": i, "task": t}, ensure_ascii=False) + "\n"
            for i, t in enumerate(plan.tasks)
        ),
        encoding="utf-8",
    )
    n_video = sum(1 for f in plan.features.values() if f.kind == "video")
    info = _info_common(plan) | {
        "codebase_version": "v2.1",
        "total_videos": n_eps * n_video,
        "total_chunks": -(-n_eps // plan.chunks_size),
        "chunks_size": plan.chunks_size,
        "data_path": LEGACY_DATA_PATH,
        "video_path": LEGACY_VIDEO_PATH if n_video else None,
    }
    # lerobot v2.1 pools episodes_stats.jsonl itself; stats.json (exact, with quantiles) is
    # extra, read first by rlkit's reader.
    _write_json(tmp / STATS_PATH, global_stats)
    _write_json(tmp / INFO_PATH, _order_info(info, plan))


def _info_common(plan: _Plan) -> dict[str, Any]:
    n_eps = len(plan.out_src)
    return {
        "robot_type": plan.robot_type,
        "total_episodes": n_eps,
        "total_frames": int(plan.lengths.sum()),
        "total_tasks": len(plan.tasks),
        "fps": plan.sources[0].ds.fps,
        "splits": {"train": f"0:{n_eps}"},
        "features": {k: f.spec for k, f in plan.features.items()},
    }


def _order_info(info: dict[str, Any], plan: _Plan) -> dict[str, Any]:
    order = [
        "codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks",
        "total_videos", "total_chunks", "chunks_size", "data_files_size_in_mb",
        "video_files_size_in_mb", "fps", "splits", "data_path", "video_path", "features",
    ]  # fmt: skip
    return {k: info[k] for k in order if k in info}


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=4, ensure_ascii=False)


# ----------------------------------------------------------------------------- entry point
def merge(cfg: MergeConfig, *, progress: bool = True) -> MergeResult:
    """Merge ``cfg.sources`` into ``cfg.output`` (see the module docstring).

    Args:
        cfg: The options (``sources`` in merge order, ``output``, ...).
        progress: Show a tqdm bar over the merged frames.

    Returns:
        What was merged, for :func:`summary_text`.

    Raises:
        ValueError: If ``sources`` is empty or overlaps ``output``.
        FileExistsError: If ``output`` exists and ``cfg.overwrite`` is False.
        FileNotFoundError: If a source folder or its metadata does not exist.
        LeRobotFormatError: If the sources cannot be merged (mismatched fps, features,
            dims with ``pad=False``, missing files, ...) or the merged output fails validation.
            Nothing is left under ``output`` in any of these cases.
    """
    t0 = time.perf_counter()
    output = Path(cfg.output)
    _check_paths([Path(s) for s in cfg.sources], output, cfg.overwrite)
    remove_stale_temps(output)  # a killed merge's .NAME.tmp-PID (can be as big as the data)
    dss = [open_dataset(s) for s in cfg.sources]
    workers = cfg.workers or min(8, max(2, available_cores()))
    version = cfg.output_version
    phases: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        plan = _plan(dss, cfg, pool)
        phases["plan"] = time.perf_counter() - t0
        n_eps, n_frames = len(plan.out_src), int(plan.lengths.sum())
        tabular = [k for k, f in plan.features.items() if f.tabular]
        row_bytes = sum(
            np.dtype(plan.features[k].spec["dtype"]).itemsize
            * int(np.prod(plan.features[k].spec["shape"]))
            for k in tabular
        )
        exact = n_frames * row_bytes <= cfg.stats_max_mb * 1024**2
        # the index columns' stats always come from the merged data (they are small)
        keep_cols = set(INDEX_FEATURES) | (set(tabular) if exact else set())

        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            (tmp / "meta").mkdir(parents=True)
            out_file = None
            if version == "v3.0":
                extra = _extra_bytes_per_row(plan)
                ep_bytes = plan.lengths * (row_bytes + extra[plan.out_src])
                chunk_idx, file_idx = plan_files(
                    ep_bytes, plan.data_files_size_in_mb * 1024**2, plan.chunks_size
                )
                out_file = np.stack([chunk_idx, file_idx], axis=1)
            pieces = _pieces(plan, out_file)
            video_cols, linked, copied = _write_videos(plan, tmp, version, cfg.copy, pool)
            load = _make_loader(plan, keep_cols, tmp, version)
            ep_parts: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in tabular}
            col_parts: dict[str, list[np.ndarray]] = {k: [] for k in keep_cols}
            writer: pq.ParquetWriter | None = None
            current: tuple[int, int] | None = None
            dict_cols = _dict_columns(plan.schema)
            bar = tqdm(
                total=n_frames, desc="merge", unit="frame", disable=not progress, unit_scale=True
            )
            try:
                for _, res in _ordered_map(pool, load, _jobs(pieces), window=2 * workers):
                    if res.table is not None:
                        if res.out_file != current:
                            if writer is not None:
                                writer.close()
                            c, f = res.out_file
                            path = tmp / DATA_PATH.format(chunk_index=c, file_index=f)
                            path.parent.mkdir(parents=True, exist_ok=True)
                            writer = pq.ParquetWriter(path, plan.schema, use_dictionary=dict_cols)
                            current = res.out_file
                        assert writer is not None
                        offset = 0
                        for n in res.lengths.tolist():  # one row group per episode
                            writer.write_table(res.table.slice(offset, n), row_group_size=n)
                            offset += n
                    for k, st in res.ep_stats.items():
                        ep_parts[k].append(st)
                    for k, v in res.columns.items():
                        col_parts[k].append(v)
                    bar.update(res.rows)
            finally:
                bar.close()
                if writer is not None:
                    writer.close()
            phases["data"] = time.perf_counter() - t0 - sum(phases.values())
            ep_stats = {
                k: {stat: np.concatenate([p[stat] for p in parts]) for stat in parts[0]}
                for k, parts in ep_parts.items()
            }
            visual = {
                k: _pool_visual(plan, k)
                for k, f in plan.features.items()
                if f.kind in ("image", "video")
            }
            global_stats = {
                k: _json_stats(v) for k, v in _global_stats(plan, ep_stats, col_parts, pool).items()
            }
            for k, (_, ds_stats) in visual.items():
                if ds_stats is not None:
                    global_stats[k] = _json_stats(ds_stats)
            if version == "v3.0":
                assert out_file is not None
                _write_meta_v3(plan, tmp, out_file, ep_stats, visual, video_cols, global_stats)
                n_files = len({tuple(x) for x in out_file.tolist()})
            else:
                _write_meta_v21(plan, tmp, ep_stats, visual, global_stats)
                n_files = n_eps
            phases["stats_meta"] = time.perf_counter() - t0 - sum(phases.values())
            if cfg.validate:
                from rlkit.lerobot.validate import validate_dataset

                # values=False: the float columns were checked for NaN/inf while converting
                problems = validate_dataset(tmp, workers=workers, values=False)
                if problems:
                    raise LeRobotFormatError(
                        f"the merged dataset failed validation, nothing was written to {output}:"
                        f"\n{_fmt_list(problems)}"
                    )
            phases["validate"] = time.perf_counter() - t0 - sum(phases.values())
            publish_dir(tmp, output, overwrite=cfg.overwrite)
        except BaseException:
            # stop the workers first: a running job must not recreate files inside tmp
            pool.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    result = MergeResult(
        output=output,
        version=version,
        sources=len(dss),
        episodes=n_eps,
        frames=n_frames,
        tasks=len(plan.tasks),
        data_files=n_files,
        padded=plan.padded,
        dropped=plan.dropped,
        videos_linked=linked,
        videos_copied=copied,
        exact_stats=exact,
        validated=cfg.validate,
        wall_s=time.perf_counter() - t0,
        phases_s=phases,
    )
    logger.info(
        "merged %d sources into %s: %d episodes, %d frames in %.2fs (%.0f frames/s)",
        result.sources,
        output,
        n_eps,
        n_frames,
        result.wall_s,
        result.frames_per_s,
    )
    return result


def _extra_bytes_per_row(plan: _Plan) -> np.ndarray:
    """Per source: uncompressed parquet bytes per row of the non-tabular (image/string) columns."""
    keys = [k for k, f in plan.features.items() if f.kind in ("image", "string", "other")]
    out = np.zeros(len(plan.sources), dtype=np.float64)
    if not keys:
        return out
    for s in plan.sources:
        total, rows = 0, 0
        for f in s.files[:8]:  # a sample of files is enough for a size estimate
            with parquet_errors(f):
                md = pq.read_metadata(f)
            rows += md.num_rows
            for rg in range(md.num_row_groups):
                group = md.row_group(rg)
                for j in range(group.num_columns):
                    col = group.column(j)
                    if col.path_in_schema.split(".")[0] in keys or any(
                        col.path_in_schema.startswith(k + ".") for k in keys
                    ):
                        total += col.total_uncompressed_size
        out[s.pos] = total / max(rows, 1)
    return out


def summary_text(result: MergeResult) -> str:
    """The summary ``merge_lerobot_dataset.py`` prints."""
    lines = [
        f"merged {result.sources} dataset(s) -> {result.output} ({result.version})",
        f"  episodes      {result.episodes}",
        f"  frames        {result.frames}",
        f"  tasks         {result.tasks}",
        f"  data files    {result.data_files}",
    ]
    if result.padded:
        for key, (dims, to) in result.padded.items():
            lines.append(f"  padded        {key}: {dims} -> {to}")
    else:
        lines.append("  padded        none")
    if result.dropped:
        lines.append(f"  dropped       {len(result.dropped)} episode(s) with missing videos")
    if result.videos_linked or result.videos_copied:
        lines.append(
            f"  videos        {result.videos_linked} hard-linked, {result.videos_copied} copied"
        )
    lines.append(
        "  stats         "
        + ("recomputed from the merged data" if result.exact_stats else "pooled per episode")
    )
    lines.append(f"  validated     {'yes' if result.validated else 'skipped (--no-validate)'}")
    phases = ", ".join(f"{k} {v:.2f}" for k, v in result.phases_s.items())
    lines.append(f"  wall time     {result.wall_s:.2f} s ({phases})")
    lines.append(f"  throughput    {result.frames_per_s:,.0f} frames/s")
    return "\n".join(lines)
