"""Read LeRobot datasets (codebase v2.0, v2.1 and v3.0) from a local folder.

Only metadata is read when a dataset is opened; frames are read column-wise on demand with
pyarrow and returned as numpy arrays. Layouts understood::

    v3.0                                          v2.0 / v2.1
    root/                                         root/
    ├── meta/                                     ├── meta/
    │   ├── info.json                             │   ├── info.json
    │   ├── stats.json                            │   ├── episodes.jsonl
    │   ├── tasks.parquet      (task -> index)    │   ├── tasks.jsonl
    │   └── episodes/                             │   ├── episodes_stats.jsonl  (v2.1)
    │       └── chunk-000/                        │   └── stats.json            (v2.0, some v2.1)
    │           └── file-000.parquet              ├── data/
    ├── data/                                     │   └── chunk-000/
    │   └── chunk-000/                            │       ├── episode_000000.parquet
    │       ├── file-000.parquet (many episodes)  │       └── episode_000001.parquet
    │       └── file-001.parquet                  └── videos/chunk-000/{video_key}/
    └── videos/{video_key}/chunk-000/                 └── episode_000000.mp4
        └── file-000.mp4

In v3.0 an episode is the global row range ``[dataset_from_index, dataset_to_index)`` of the
concatenated data files (sorted by chunk, then file); in v2.x it is one parquet file and the
range is derived from cumulative episode lengths.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rlkit.lerobot.stats import aggregate_stats, compute_stats

logger = logging.getLogger(__name__)

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
LEGACY_EPISODES_PATH = "meta/episodes.jsonl"
LEGACY_TASKS_PATH = "meta/tasks.jsonl"
LEGACY_EPISODES_STATS_PATH = "meta/episodes_stats.jsonl"
LEGACY_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
LEGACY_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"

SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
NON_TABULAR_DTYPES = ("image", "video")
TIMESTAMP_TOL_S = 1e-4  # lerobot's default tolerance_s for timestamp checks
_MAX_REPORTED = 5  # validate(): problems of one kind listed before summarising the rest


class LeRobotFormatError(ValueError):
    """A LeRobot dataset (or data meant to become one) breaks the format.

    The message names the file or key, the offending value and how to fix it.
    """


@contextlib.contextmanager
def parquet_errors(path: Path) -> Iterator[None]:
    """Turn pyarrow's errors on a damaged parquet file (zero bytes, truncated, corrupt pages)
    into a :class:`LeRobotFormatError` naming the file.

    pyarrow raises ``ArrowInvalid`` for a missing footer and a plain ``OSError`` for corrupt
    pages, neither naming the file. A missing file stays a ``FileNotFoundError``.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as e:
        detail = " ".join(str(e).split())
        raise LeRobotFormatError(
            f"{path} is not a readable parquet file ({detail}); restore it from a copy or "
            "re-export the dataset"
        ) from e


def nonfinite_rows(values: np.ndarray) -> np.ndarray:
    """Row indices (frames) of ``values`` holding NaN or inf; empty for non-float arrays."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    finite = np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    return np.flatnonzero(~finite)


def _stat_array(value: Any, where: str, feat: str, name: str) -> np.ndarray:
    """One stat of a stats file as float64; raises naming the file, feature and stat when it
    is not numeric or holds NaN/inf (``null`` in JSON reads as NaN)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise LeRobotFormatError(
            f"{where}: stats[{feat!r}][{name!r}] is not a numeric array ({e}); recompute the stats"
        ) from e
    if not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.isfinite(arr).sum())
        raise LeRobotFormatError(
            f"{where}: stats[{feat!r}][{name!r}] holds {bad} NaN/inf/null value(s); recompute "
            "the stats from finite data (rlkit-validate-lerobot lists what else is wrong)"
        )
    return arr


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LeRobotFormatError(f"{path} is not valid JSON ({e}); re-export the dataset") from e


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise LeRobotFormatError(
                    f"{path}:{lineno} is not valid JSON ({e}); fix or remove that line"
                ) from e
    return rows


def _normalise_version(raw: Any, path: Path) -> str:
    text = str(raw).strip()
    if not text.startswith("v"):
        text = "v" + text
    m = re.fullmatch(r"v(\d+)\.(\d+)(?:\.\d+)?", text)
    version = f"v{m.group(1)}.{m.group(2)}" if m else text
    if version not in SUPPORTED_VERSIONS:
        raise LeRobotFormatError(
            f"{path}: codebase_version must be one of {list(SUPPORTED_VERSIONS)}, got {raw!r}; "
            "convert the dataset with lerobot's conversion scripts first"
        )
    return version


def _column_to_numpy(column: pa.ChunkedArray | pa.Array, key: str, source: Path) -> np.ndarray:
    """Convert one parquet column to numpy: lists -> ``(N, D)`` via flatten + reshape."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    typ = column.type
    n = len(column)
    if pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ):
        if column.null_count:
            raise LeRobotFormatError(
                f"{source}: column {key!r} has {column.null_count} null rows; "
                "every frame needs a value"
            )
        if pa.types.is_fixed_size_list(typ):
            width = typ.list_size
        else:
            lengths = np.diff(column.offsets.to_numpy())
            width = int(lengths[0]) if n else 0
            if n and np.any(lengths != width):
                bad = int(np.flatnonzero(lengths != width)[0])
                raise LeRobotFormatError(
                    f"{source}: column {key!r} has rows of different lengths (row 0: {width}, "
                    f"row {bad}: {int(lengths[bad])}); vector features need a fixed length"
                )
        flat = column.flatten()  # respects slicing/offsets, no per-row Python
        values = flat.to_numpy(zero_copy_only=False)
        if pa.types.is_list(flat.type) or pa.types.is_fixed_size_list(flat.type):
            inner = _column_to_numpy(flat, key, source)
            return inner.reshape(n, width, *inner.shape[1:])
        return values.reshape(n, width)
    return column.to_numpy(zero_copy_only=False)


class LeRobotDataset:
    """A LeRobot dataset on local disk (v2.0, v2.1 or v3.0), opened lazily.

    Attributes:
        root: Dataset folder.
        version: ``"v2.0"``, ``"v2.1"`` or ``"v3.0"``.
        info: Parsed ``meta/info.json``.
        fps: Frames per second.
        features: ``info["features"]``.
        num_episodes: Number of episodes in the episode metadata.
        num_frames: Sum of episode lengths in the episode metadata.
        tasks: Task strings ordered by ``task_index``.
        episodes: One row per episode with at least ``episode_index, length, tasks,
            dataset_from_index, dataset_to_index`` (v3.0 also the ``data/*`` and ``videos/*``
            columns; per-episode ``stats/*`` columns are not loaded).
    """

    def __init__(self, root: str | Path) -> None:
        """Open the metadata of the dataset at ``root``.

        Args:
            root: Dataset folder containing ``meta/info.json``.

        Raises:
            FileNotFoundError: If ``root`` or a required metadata file does not exist.
            LeRobotFormatError: If the metadata is malformed or of an unsupported version.
        """
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(
                f"{self.root} is a file, not a dataset folder; pass the folder that holds "
                "meta/info.json"
            )
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder {self.root} does not exist")
        info_path = self.root / INFO_PATH
        if not info_path.is_file():
            raise FileNotFoundError(
                f"{info_path} not found; {self.root} is not a LeRobot dataset "
                "(expected meta/info.json)"
            )
        self.info: dict[str, Any] = _read_json(info_path)
        for key in ("codebase_version", "fps", "features"):
            if key not in self.info:
                raise LeRobotFormatError(f"{info_path} lacks required key {key!r}; add it")
        self.version = _normalise_version(self.info["codebase_version"], info_path)
        self.fps = int(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self._task_indices: np.ndarray
        if self.version == "v3.0":
            self.tasks, self._task_indices = self._load_tasks_v3()
            self.episodes = self._load_episodes_v3()
        else:
            self.tasks, self._task_indices = self._load_tasks_v2()
            self.episodes = self._load_episodes_v2()
        self.num_episodes = len(self.episodes)
        self.num_frames = int(self.episodes["length"].sum()) if self.num_episodes else 0

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset(root={str(self.root)!r}, version={self.version!r}, "
            f"episodes={self.num_episodes}, frames={self.num_frames}, fps={self.fps})"
        )

    # ------------------------------------------------------------------ metadata loading
    def _require(self, rel: str) -> Path:
        path = self.root / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; a {self.version} dataset needs {rel}")
        return path

    def _load_tasks_v3(self) -> tuple[list[str], np.ndarray]:
        path = self._require(TASKS_PATH)
        with parquet_errors(path):
            df = pd.read_parquet(path)
        if "task_index" not in df.columns:
            raise LeRobotFormatError(
                f"{path} lacks column 'task_index' (columns: {list(df.columns)}); "
                "write it from a DataFrame indexed by task with a task_index column"
            )
        if "task" in df.columns:
            names = df["task"]
        elif "__index_level_0__" in df.columns:
            names = df["__index_level_0__"]
        else:
            names = pd.Series(df.index)
        order = np.argsort(df["task_index"].to_numpy(), kind="stable")
        return [str(t) for t in np.asarray(names)[order]], df["task_index"].to_numpy()[order]

    def _load_tasks_v2(self) -> tuple[list[str], np.ndarray]:
        path = self._require(LEGACY_TASKS_PATH)
        rows = sorted(_read_jsonl(path), key=lambda r: int(r["task_index"]))
        for r in rows:
            if "task" not in r or "task_index" not in r:
                raise LeRobotFormatError(
                    f"{path}: each line needs 'task_index' and 'task', got {r}"
                )
        return [str(r["task"]) for r in rows], np.array(
            [int(r["task_index"]) for r in rows], dtype=np.int64
        )

    def _load_episodes_v3(self) -> pd.DataFrame:
        files = sorted((self.root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        if not files:
            raise FileNotFoundError(
                f"no episode metadata under {self.root / EPISODES_DIR}; a v3.0 dataset needs "
                f"{EPISODES_PATH.format(chunk_index=0, file_index=0)}"
            )
        tables = []
        for f in files:
            with parquet_errors(f):
                names = pq.read_schema(f).names
                keep = [c for c in names if not c.startswith("stats/")]
                tables.append(pq.read_table(f, columns=keep))
        table = pa.concat_tables(tables, promote_options="permissive")
        df = table.to_pandas()
        for col in ("episode_index", "length", "dataset_from_index", "dataset_to_index"):
            if col not in df.columns:
                raise LeRobotFormatError(
                    f"{files[0]} lacks column {col!r} (columns: {list(df.columns)})"
                )
        df["tasks"] = [list(t) if t is not None else [] for t in df.get("tasks", [None] * len(df))]
        return df.reset_index(drop=True)

    def _load_episodes_v2(self) -> pd.DataFrame:
        path = self._require(LEGACY_EPISODES_PATH)
        rows = _read_jsonl(path)
        for r in rows:
            if "episode_index" not in r or "length" not in r:
                raise LeRobotFormatError(
                    f"{path}: each line needs 'episode_index' and 'length', got keys {sorted(r)}"
                )
        rows.sort(key=lambda r: int(r["episode_index"]))
        df = pd.DataFrame(
            {
                "episode_index": np.array([int(r["episode_index"]) for r in rows], np.int64),
                "tasks": [list(r.get("tasks", [])) for r in rows],
                "length": np.array([int(r["length"]) for r in rows], np.int64),
            }
        )
        ends = np.cumsum(df["length"].to_numpy())
        df["dataset_from_index"] = ends - df["length"].to_numpy()
        df["dataset_to_index"] = ends
        return df

    # ------------------------------------------------------------------ data files
    def data_files(self) -> list[Path]:
        """Data parquet files in the order their frames are concatenated.

        Returns:
            v3.0: the distinct files referenced by the episodes, sorted by (chunk, file);
            v2.x: one file per episode, by episode index. Files may not exist (see validate).
        """
        pattern = str(self.info.get("data_path") or "")
        if self.version == "v3.0":
            eps = self.episodes
            if {"data/chunk_index", "data/file_index"} <= set(eps.columns):
                pairs = sorted(
                    set(
                        zip(
                            eps["data/chunk_index"].astype(int),
                            eps["data/file_index"].astype(int),
                            strict=True,
                        )
                    )
                )
                pattern = pattern or DATA_PATH
                return [self.root / pattern.format(chunk_index=c, file_index=f) for c, f in pairs]
            return sorted((self.root / "data").glob("chunk-*/file-*.parquet"))
        pattern = pattern or LEGACY_DATA_PATH
        chunks_size = int(self.info.get("chunks_size", 1000))
        return [
            self.root / pattern.format(episode_chunk=ep // chunks_size, episode_index=ep)
            for ep in self.episodes["episode_index"].astype(int)
        ]

    def _check_keys(self, keys: list[str] | None) -> list[str]:
        tabular = [
            k for k, ft in self.features.items() if ft.get("dtype") not in NON_TABULAR_DTYPES
        ]
        if keys is None:
            return tabular
        for key in keys:
            if key not in self.features:
                close = difflib.get_close_matches(key, list(self.features), n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise LeRobotFormatError(
                    f"feature {key!r} is not in {self.root / INFO_PATH}; available: "
                    f"{sorted(self.features)}{hint}"
                )
            if self.features[key].get("dtype") in NON_TABULAR_DTYPES:
                raise LeRobotFormatError(
                    f"feature {key!r} is a {self.features[key]['dtype']} feature; load_columns "
                    "reads only tabular (numeric) columns, decode images/videos separately"
                )
        return list(keys)

    def _read_file(self, path: Path, keys: list[str]) -> dict[str, np.ndarray]:
        if not path.is_file():
            raise FileNotFoundError(f"data file {path} does not exist; the dataset is incomplete")
        # ParquetFile.read is ~5x cheaper per file than pq.read_table (no dataset discovery),
        # which matters for v2.x datasets of thousands of one-episode files.
        with parquet_errors(path), pq.ParquetFile(path) as pf:
            schema_names = set(pf.schema_arrow.names)
            missing = [k for k in keys if k not in schema_names]
            if missing:
                raise LeRobotFormatError(
                    f"{path} lacks column(s) {missing} declared in meta/info.json features; "
                    "remove them from info.json or re-export the data"
                )
            table = pf.read(columns=keys)
        return {k: _column_to_numpy(table.column(k), k, path) for k in keys}

    def _shape_output(self, key: str, arr: np.ndarray) -> np.ndarray:
        ft = self.features.get(key, {})
        shape = tuple(int(s) for s in ft.get("shape", ()) or ())
        dtype = ft.get("dtype")
        if dtype not in (None, "string") and arr.dtype.kind in "biuf":
            # an unknown dtype name in info.json keeps the parquet dtype
            with contextlib.suppress(TypeError):
                arr = arr.astype(np.dtype(dtype), copy=False)
        n = arr.shape[0]
        if shape in ((), (1,)):
            return arr.reshape(n) if arr.size == n else arr
        if arr.size == n * int(np.prod(shape)):
            return arr.reshape(n, *shape)
        raise LeRobotFormatError(
            f"column {key!r} holds {arr.size // max(n, 1)} values per frame but meta/info.json "
            f"declares shape {list(shape)}; fix the feature shape in info.json"
        )

    def load_columns(self, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Read whole columns of the data, frames in file order.

        Args:
            keys: Feature names to read; ``None`` reads every non-image/video feature.

        Returns:
            Dict key -> array: ``(N,)`` for scalar features (shape ``[1]``), ``(N, D)`` for
            vector features whatever their parquet type (``fixed_size_list``, ``list<float>``,
            ``list<double>``), cast to the dtype declared in ``info.json``.

        Raises:
            LeRobotFormatError: If a key is unknown (message lists the features and the closest
                match) or is an image/video feature, or a column is malformed.
            FileNotFoundError: If a data file is missing.
        """
        keys = self._check_keys(keys)
        files = self.data_files()
        if not keys:
            return {}
        if len(files) > 4:
            with ThreadPoolExecutor(max_workers=8) as pool:
                parts = list(pool.map(lambda p: self._read_file(p, keys), files))
        else:
            parts = [self._read_file(p, keys) for p in files]
        out: dict[str, np.ndarray] = {}
        for k in keys:
            arrays = [p[k] for p in parts]
            arr = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
            out[k] = self._shape_output(k, arr)
        return out

    # ------------------------------------------------------------------ stats
    def stats(self, keys: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Dataset-level statistics per feature, every value finite.

        Args:
            keys: Features to return (default: every feature with stats). Only these are
                read and checked, so a bad stat of a feature the caller does not use cannot
                stop it.

        Returns:
            ``meta/stats.json`` when present; otherwise (v2.1) the per-episode stats of
            ``meta/episodes_stats.jsonl`` pooled with :func:`aggregate_stats`; otherwise stats
            computed from the data (tabular features only). ``count`` is int64, others float64.

        Raises:
            LeRobotFormatError: A stat is not numeric or holds NaN/inf (``null`` in JSON): the
                message names the file, the feature and the stat. Normalising with such a
                stat would silently turn every frame into NaN.
        """
        wanted = None if keys is None else set(keys)
        path = self.root / STATS_PATH
        if path.is_file():
            raw = _read_json(path)
            if not isinstance(raw, dict):
                raise LeRobotFormatError(
                    f"{path} must hold {{feature: {{stat: values}}}}, got a "
                    f"{type(raw).__name__}; recompute the stats"
                )
            out: dict[str, dict[str, np.ndarray]] = {}
            for feat, stats in raw.items():
                if wanted is not None and feat not in wanted:
                    continue
                if not isinstance(stats, dict):
                    raise LeRobotFormatError(
                        f"{path}: stats[{feat!r}] must map stat names to values, got "
                        f"{type(stats).__name__}; recompute the stats"
                    )
                out[feat] = {
                    name: _stat_array(v, str(path), feat, name) for name, v in stats.items()
                }
                if "count" in out[feat]:
                    out[feat]["count"] = out[feat]["count"].astype(np.int64)
            return out
        ep_path = self.root / LEGACY_EPISODES_STATS_PATH
        if ep_path.is_file():
            per_feature: dict[str, list[dict[str, np.ndarray]]] = {}
            for row in _read_jsonl(ep_path):
                where = f"{ep_path} (episode {row.get('episode_index')})"
                for feat, stats in row.get("stats", {}).items():
                    if wanted is not None and feat not in wanted:
                        continue
                    per_feature.setdefault(feat, []).append(
                        {name: _stat_array(v, where, feat, name) for name, v in stats.items()}
                    )
            return {feat: aggregate_stats(groups) for feat, groups in per_feature.items()}
        logger.info("%s has no stats file; computing stats from the data", self.root)
        columns = self.load_columns(
            [
                k
                for k, ft in self.features.items()
                if ft.get("dtype") not in (*NON_TABULAR_DTYPES, "string")
                and (wanted is None or k in wanted)
            ]
        )
        for k, v in columns.items():
            bad = nonfinite_rows(v)
            if len(bad):
                raise LeRobotFormatError(
                    f"{self.root}: feature {k!r} holds NaN/inf in {len(bad)} frame(s) (first at "
                    f"row {int(bad[0])}) and the dataset has no {STATS_PATH} to normalise with; "
                    "clean or drop those frames"
                )
        return {k: compute_stats(v) for k, v in columns.items()}

    # ------------------------------------------------------------------ validation
    def validate(self) -> list[str]:
        """Check the invariants lerobot's loader assumes.

        Checks: episode indices 0..E-1; ``index`` equals the global row position; ``task_index``
        values exist in the tasks table (whose order is 0..T-1); ``frame_index`` counts from 0
        and ``timestamp`` steps by ``1/fps`` (tolerance 1e-4 s) within each episode;
        ``info.json`` totals and ``splits``; referenced data/video files exist; stats shapes
        (``count`` (1,), images (3,1,1), others the feature shape); v3.0 ``length`` /
        ``dataset_from_index`` / ``dataset_to_index`` agree with the rows of each data file and
        video ``to_timestamp - from_timestamp`` is ``length / fps`` (video durations are not
        probed).

        Returns:
            Human-readable problems; empty when the dataset is valid.
        """
        problems: list[str] = []
        info_path = self.root / INFO_PATH
        eps = self.episodes
        n_eps = len(eps)
        ep_idx = eps["episode_index"].to_numpy().astype(np.int64)
        lengths = eps["length"].to_numpy().astype(np.int64)
        from_idx = eps["dataset_from_index"].to_numpy().astype(np.int64)
        to_idx = eps["dataset_to_index"].to_numpy().astype(np.int64)

        # --- episode indices and lengths
        if not np.array_equal(ep_idx, np.arange(n_eps)):
            bad = int(np.flatnonzero(ep_idx != np.arange(n_eps))[0])
            problems.append(
                f"episode indices must be 0..{n_eps - 1} without gaps (row i has episode_index i);"
                f" row {bad} has episode_index {ep_idx[bad]}"
            )
        if np.any(lengths <= 0):
            problems.append(f"episodes {ep_idx[lengths <= 0][:_MAX_REPORTED].tolist()} are empty")
        if self.version == "v3.0":
            if not np.array_equal(to_idx - from_idx, lengths):
                bad = np.flatnonzero(to_idx - from_idx != lengths)
                problems.append(
                    f"{len(bad)} episodes have dataset_to_index - dataset_from_index != length, "
                    f"e.g. episode {ep_idx[bad[0]]}: {from_idx[bad[0]]}..{to_idx[bad[0]]} vs "
                    f"length {lengths[bad[0]]}"
                )
            expected_from = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            if not np.array_equal(from_idx, expected_from):
                bad = int(np.flatnonzero(from_idx != expected_from)[0])
                problems.append(
                    f"dataset_from_index must be the cumulative sum of lengths; episode "
                    f"{ep_idx[bad]} starts at {from_idx[bad]}, expected {expected_from[bad]}"
                )

        # --- tasks
        if not np.array_equal(self._task_indices, np.arange(len(self.tasks))):
            problems.append(
                f"tasks must be ordered by task_index 0..{len(self.tasks) - 1}, got task_index "
                f"values {self._task_indices[:10].tolist()}"
            )
        known_tasks = set(self.tasks)
        unknown = sorted({t for ts in eps["tasks"] for t in ts} - known_tasks)
        if unknown:
            problems.append(f"episodes reference tasks missing from the tasks table: {unknown[:5]}")

        # --- info.json totals and splits
        for key, actual in (
            ("total_episodes", n_eps),
            ("total_frames", int(lengths.sum())),
            ("total_tasks", len(self.tasks)),
        ):
            if key not in self.info:
                problems.append(f"{info_path} lacks {key!r} (should be {actual})")
            elif int(self.info[key]) != actual:
                problems.append(
                    f"{info_path}: {key} is {self.info[key]} but the dataset has {actual}"
                )
        problems.extend(self._validate_splits(n_eps))

        # --- files
        files = self.data_files()
        missing = [f for f in files if not f.is_file()]
        for f in missing[:_MAX_REPORTED]:
            problems.append(f"data file {f} is referenced but does not exist")
        if len(missing) > _MAX_REPORTED:
            problems.append(f"... and {len(missing) - _MAX_REPORTED} more missing data files")
        problems.extend(self._validate_videos())

        # --- frame-level checks (only when all data is present, positions are otherwise unknown)
        if not missing and n_eps:
            problems.extend(self._validate_frames(files, ep_idx, lengths, from_idx, to_idx))

        problems.extend(self._validate_stats())
        return problems

    def _validate_splits(self, n_eps: int) -> list[str]:
        splits = self.info.get("splits")
        if not isinstance(splits, dict) or not splits:
            return [f"{self.root / INFO_PATH}: 'splits' missing; expected {{'train': '0:{n_eps}'}}"]
        covered = np.zeros(n_eps, dtype=bool)
        for name, spec in splits.items():
            m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(spec))
            if not m:
                return [
                    f"{self.root / INFO_PATH}: split {name!r} must look like 'a:b', got {spec!r}"
                ]
            covered[int(m.group(1)) : int(m.group(2))] = True
        if not covered.all():
            return [
                f"{self.root / INFO_PATH}: splits {splits} do not cover episodes "
                f"{np.flatnonzero(~covered)[:5].tolist()}...; expected {{'train': '0:{n_eps}'}}"
            ]
        return []

    def _video_keys(self) -> list[str]:
        return [k for k, ft in self.features.items() if ft.get("dtype") == "video"]

    def _validate_videos(self) -> list[str]:
        problems: list[str] = []
        keys = self._video_keys()
        if not keys:
            return problems
        pattern = self.info.get("video_path")
        if not pattern:
            return [f"{self.root / INFO_PATH}: video features {keys} but video_path is null"]
        eps = self.episodes
        missing: list[str] = []
        for key in keys:
            if self.version == "v3.0":
                cols = [f"videos/{key}/chunk_index", f"videos/{key}/file_index"]
                if not set(cols) <= set(eps.columns):
                    problems.append(f"episode metadata lacks columns {cols} for video {key!r}")
                    continue
                pairs = sorted(
                    set(zip(eps[cols[0]].astype(int), eps[cols[1]].astype(int), strict=True))
                )
                paths = [
                    self.root / pattern.format(video_key=key, chunk_index=c, file_index=f)
                    for c, f in pairs
                ]
                ts_cols = [f"videos/{key}/from_timestamp", f"videos/{key}/to_timestamp"]
                if set(ts_cols) <= set(eps.columns):
                    dur = eps[ts_cols[1]].to_numpy(float) - eps[ts_cols[0]].to_numpy(float)
                    expected = eps["length"].to_numpy(float) / self.fps
                    bad = np.flatnonzero(np.abs(dur - expected) > 0.5 / self.fps)
                    if len(bad):
                        i = int(bad[0])
                        problems.append(
                            f"video {key!r}: {len(bad)} episodes have to_timestamp - "
                            f"from_timestamp != length/fps, e.g. episode "
                            f"{eps['episode_index'].iloc[i]}: {dur[i]:.4f}s vs {expected[i]:.4f}s"
                        )
            else:
                chunks_size = int(self.info.get("chunks_size", 1000))
                paths = [
                    self.root
                    / pattern.format(
                        episode_chunk=ep // chunks_size, video_key=key, episode_index=ep
                    )
                    for ep in eps["episode_index"].astype(int)
                ]
            missing.extend(str(p) for p in paths if not p.is_file())
        for p in missing[:_MAX_REPORTED]:
            problems.append(f"video file {p} is referenced but does not exist")
        if len(missing) > _MAX_REPORTED:
            problems.append(f"... and {len(missing) - _MAX_REPORTED} more missing video files")
        return problems

    def _validate_frames(
        self,
        files: list[Path],
        ep_idx: np.ndarray,
        lengths: np.ndarray,
        from_idx: np.ndarray,
        to_idx: np.ndarray,
    ) -> list[str]:
        problems: list[str] = []
        rows: list[int] = []
        for f in files:
            try:
                with parquet_errors(f):
                    rows.append(pq.read_metadata(f).num_rows)
            except LeRobotFormatError as e:
                problems.append(str(e))
        if problems:  # row positions are unknown past an unreadable file
            return problems[:_MAX_REPORTED] + (
                [f"... and {len(problems) - _MAX_REPORTED} more unreadable data files"]
                if len(problems) > _MAX_REPORTED
                else []
            )
        file_rows = np.array(rows, dtype=np.int64)
        n_rows = int(file_rows.sum())
        if n_rows != int(lengths.sum()):
            problems.append(
                f"data files hold {n_rows} rows but the episode lengths sum to {int(lengths.sum())}"
            )
            return problems
        if self.version == "v3.0" and {"data/chunk_index", "data/file_index"} <= set(
            self.episodes.columns
        ):
            # each episode's [from, to) must lie inside the file its metadata points to
            starts = np.concatenate([[0], np.cumsum(file_rows)[:-1]])
            pattern = str(self.info.get("data_path") or DATA_PATH)
            pos = {f: i for i, f in enumerate(files)}
            which = np.array(
                [
                    pos[self.root / pattern.format(chunk_index=int(c), file_index=int(f))]
                    for c, f in zip(
                        self.episodes["data/chunk_index"],
                        self.episodes["data/file_index"],
                        strict=True,
                    )
                ]
            )
            outside = (from_idx < starts[which]) | (to_idx > starts[which] + file_rows[which])
            if outside.any():
                i = int(np.flatnonzero(outside)[0])
                problems.append(
                    f"{int(outside.sum())} episodes have rows outside their data file, e.g. "
                    f"episode {ep_idx[i]} [{from_idx[i]}, {to_idx[i]}) vs {files[which[i]]} rows "
                    f"[{starts[which[i]]}, {starts[which[i]] + file_rows[which[i]]})"
                )
        keys = [k for k in INDEX_FEATURES if k in self.features]
        try:
            cols = self.load_columns(keys)
        except (LeRobotFormatError, FileNotFoundError) as e:
            return [*problems, str(e)]
        expected_ep = np.repeat(ep_idx, lengths)
        local = np.arange(n_rows) - np.repeat(
            from_idx if self.version == "v3.0" else np.concatenate([[0], np.cumsum(lengths)[:-1]]),
            lengths,
        )
        checks = (
            ("episode_index", expected_ep, "must match the episode metadata"),
            ("index", np.arange(n_rows), "must equal the global row position"),
            ("frame_index", local, "must count from 0 within each episode"),
        )
        for key, expected, why in checks:
            if key not in cols:
                problems.append(f"data lacks the {key!r} column")
                continue
            got = cols[key]
            if not np.array_equal(got, expected):
                row = int(np.flatnonzero(got != expected)[0])
                problems.append(
                    f"{key} {why}: row {row} (episode {expected_ep[row]}) has {got[row]}, "
                    f"expected {expected[row]}"
                )
        if "timestamp" in cols:
            ts = cols["timestamp"].astype(np.float64)
            steps = np.diff(ts)
            inside = np.ones(len(steps), dtype=bool)
            inside[np.cumsum(lengths)[:-1] - 1] = False  # episode boundaries are not steps
            bad = np.flatnonzero(inside & (np.abs(steps - 1.0 / self.fps) > TIMESTAMP_TOL_S))
            if len(bad):
                row = int(bad[0]) + 1
                problems.append(
                    f"timestamp must step by 1/fps={1.0 / self.fps:.6f}s within episodes; "
                    f"{len(bad)} steps differ, first at row {row} (episode {expected_ep[row]}): "
                    f"{ts[row - 1]:.6f} -> {ts[row]:.6f}"
                )
        else:
            problems.append("data lacks the 'timestamp' column")
        if "task_index" in cols:
            ti = cols["task_index"]
            bad = np.flatnonzero((ti < 0) | (ti >= len(self.tasks)))
            if len(bad):
                problems.append(
                    f"task_index must be in 0..{len(self.tasks) - 1} (rows of the tasks table); "
                    f"{len(bad)} rows are not, first row {int(bad[0])} has {ti[bad[0]]}"
                )
        return problems

    def _validate_stats(self) -> list[str]:
        problems: list[str] = []
        stats_path = self.root / STATS_PATH
        if stats_path.is_file():
            raw = _read_json(stats_path)
            if not isinstance(raw, dict):
                return [f"{stats_path} must hold {{feature: {{stat: values}}}}, got {raw!r:.60}"]
            groups = [(str(stats_path), raw)]
            sample = 1
        elif (self.root / LEGACY_EPISODES_STATS_PATH).is_file():
            path = self.root / LEGACY_EPISODES_STATS_PATH
            groups = [
                (f"{path} (episode {r.get('episode_index')})", r.get("stats", {}))
                for r in _read_jsonl(path)
            ]
            sample = 50  # shapes are uniform: a sample is enough; values are checked in all
        else:
            return problems  # stats are optional for v2.0; computed on demand
        bad_values: list[str] = []
        for i, (where, stats) in enumerate(groups):
            if not isinstance(stats, dict):
                problems.append(f"{where}: stats must map features to stats, got {stats!r:.60}")
                continue
            for feat, fstats in stats.items():
                ft = self.features.get(feat)
                if ft is None or not isinstance(fstats, dict):
                    continue
                is_visual = ft.get("dtype") in NON_TABULAR_DTYPES
                shape = tuple(int(d) for d in ft.get("shape") or (1,))
                expected = (3, 1, 1) if is_visual else shape
                for name, value in fstats.items():
                    try:
                        _stat_array(value, where, feat, name)
                    except LeRobotFormatError as e:
                        bad_values.append(str(e))
                        continue
                    got = np.shape(value)
                    want = (1,) if name == "count" else expected
                    if i < sample and got != want and len(problems) < 20:
                        problems.append(
                            f"{where}: stats[{feat!r}][{name!r}] has shape {got}, expected {want}"
                        )
        problems.extend(bad_values[:_MAX_REPORTED])
        if len(bad_values) > _MAX_REPORTED:
            problems.append(f"... and {len(bad_values) - _MAX_REPORTED} more non-finite stats")
        return problems


def open_dataset(root: str | Path) -> LeRobotDataset:
    """Open a local LeRobot dataset (v2.0, v2.1 or v3.0).

    Args:
        root: Dataset folder containing ``meta/info.json``.

    Returns:
        The opened :class:`LeRobotDataset` (metadata only; frames are read on demand).
    """
    return LeRobotDataset(root)
