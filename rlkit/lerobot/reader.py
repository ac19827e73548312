"""Read LeRobot datasets (codebase v2.0, v2.1 and v3.0) from a local folder.

Only metadata is read when a dataset is opened; frames are read column-wise on demand with
pyarrow and returned as numpy arrays. The layouts are drawn in :mod:`rlkit.lerobot.layout`.

In v3.0 an episode is the global row range ``[dataset_from_index, dataset_to_index)`` of the
concatenated data files (sorted by chunk, then file); in v2.x it is one parquet file and the
range is derived from cumulative episode lengths. :func:`rlkit.lerobot.validate.validate_dataset`
checks a dataset against the invariants lerobot's loader assumes.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rlkit.lerobot.files import (
    column_to_numpy,
    nonfinite_rows,
    parquet_errors,
    read_json,
    read_jsonl,
    stat_array,
)
from rlkit.lerobot.layout import (
    EPISODES_DIR,
    EPISODES_PATH,
    INFO_PATH,
    LEGACY_EPISODES_PATH,
    LEGACY_EPISODES_STATS_PATH,
    LEGACY_TASKS_PATH,
    NON_TABULAR_DTYPES,
    STATS_PATH,
    SUPPORTED_VERSIONS,
    TASKS_PATH,
    Layout,
    LeRobotFormatError,
)
from rlkit.lerobot.stats import aggregate_stats, compute_stats

logger = logging.getLogger(__name__)


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


class DatasetReader:
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
        task_indices: The ``task_index`` of each row of the tasks table, in the order
            :attr:`tasks` lists them (0..T-1 in a valid dataset).
        layout: Where the data and video files are (:class:`~rlkit.lerobot.layout.Layout`).
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
        self.info: dict[str, Any] = read_json(info_path)
        for key in ("codebase_version", "fps", "features"):
            if key not in self.info:
                raise LeRobotFormatError(f"{info_path} lacks required key {key!r}; add it")
        self.version = _normalise_version(self.info["codebase_version"], info_path)
        self.fps = int(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self.layout = Layout.of(self.info, self.version)
        self.task_indices: np.ndarray
        if self.version == "v3.0":
            self.tasks, self.task_indices = self._load_tasks_v3()
            self.episodes = self._load_episodes_v3()
        else:
            self.tasks, self.task_indices = self._load_tasks_v2()
            self.episodes = self._load_episodes_v2()
        self.num_episodes = len(self.episodes)
        self.num_frames = int(self.episodes["length"].sum()) if self.num_episodes else 0

    def __repr__(self) -> str:
        return (
            f"DatasetReader(root={str(self.root)!r}, version={self.version!r}, "
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
        rows = sorted(read_jsonl(path), key=lambda r: int(r["task_index"]))
        for r in rows:
            if "task" not in r or "task_index" not in r:
                raise LeRobotFormatError(
                    f"{path}: each line needs 'task_index' and 'task', got {r}"
                )
        return [str(r["task"]) for r in rows], np.array(
            [int(r["task_index"]) for r in rows], dtype=np.int64
        )

    def episode_files(self) -> list[Path]:
        """v3.0: the episode metadata parquet files, in episode order."""
        return sorted((self.root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))

    def _episode_tables(self, keep: Callable[[str], bool]) -> list[pa.Table]:
        """v3.0: the columns ``keep`` accepts of each episode metadata file."""
        tables = []
        for f in self.episode_files():
            with parquet_errors(f):
                cols = [c for c in pq.read_schema(f).names if keep(c)]
                tables.append(pq.read_table(f, columns=cols))
        return tables

    def _load_episodes_v3(self) -> pd.DataFrame:
        files = self.episode_files()
        if not files:
            raise FileNotFoundError(
                f"no episode metadata under {self.root / EPISODES_DIR}; a v3.0 dataset needs "
                f"{EPISODES_PATH.format(chunk_index=0, file_index=0)}"
            )
        tables = self._episode_tables(lambda c: not c.startswith("stats/"))
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
        rows = read_jsonl(path)
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
    def _locations(self, prefix: str) -> list[tuple[int, int]] | None:
        """v3.0: the ``(chunk, file)`` of each episode from its ``{prefix}/chunk_index`` and
        ``{prefix}/file_index`` columns; None when the episode metadata lacks them."""
        cols = [f"{prefix}/chunk_index", f"{prefix}/file_index"]
        if not set(cols) <= set(self.episodes.columns):
            return None
        eps = self.episodes
        return list(zip(eps[cols[0]].astype(int), eps[cols[1]].astype(int), strict=True))

    def data_files(self) -> list[Path]:
        """Data parquet files in the order their frames are concatenated.

        Returns:
            v3.0: the distinct files referenced by the episodes, sorted by (chunk, file);
            v2.x: one file per episode, by episode index. Files may not exist (see
            :func:`~rlkit.lerobot.validate.validate_dataset`).
        """
        if self.version != "v3.0":
            eps = self.episodes["episode_index"].astype(int)
            return [self.root / self.layout.data_file(ep) for ep in eps]
        locs = self._locations("data")
        if locs is None:
            return sorted((self.root / "data").glob("chunk-*/file-*.parquet"))
        return [self.root / self.layout.data_file(loc) for loc in sorted(set(locs))]

    def video_files(self, key: str) -> list[Path]:
        """The file of video feature ``key`` for each episode (rows of :attr:`episodes`); v3.0
        episodes share files. Files may not exist.

        Raises:
            LeRobotFormatError: If ``info.json`` has no ``video_path`` or (v3.0) the episode
                metadata lacks ``videos/{key}/chunk_index`` / ``file_index``.
        """
        if self.version == "v3.0":
            locs: list[Any] | None = self._locations(f"videos/{key}")
            if locs is None:
                raise LeRobotFormatError(
                    f"{self.root}: episode metadata lacks the columns videos/{key}/chunk_index "
                    "and file_index; the dataset's video index is incomplete"
                )
        else:
            locs = self.episodes["episode_index"].astype(int).tolist()
        paths = {loc: self.root / self.layout.video_file(loc, key) for loc in set(locs)}
        return [paths[loc] for loc in locs]

    def video_frames(self, episode: int, key: str) -> np.ndarray:
        """Decode episode ``episode``'s frames of video feature ``key`` (PyAV): uint8
        ``(length, H, W, 3)``.

        Raises:
            LeRobotFormatError: ``key`` is not a video feature, there is no such episode, or
                its video holds fewer frames than the episode's length.
            ImportError: PyAV is not installed (``pip install 'rlkit[video]'``).
        """
        from rlkit.lerobot.video import decode_episode

        if self.features.get(key, {}).get("dtype") != "video":
            videos = [k for k, f in self.features.items() if f.get("dtype") == "video"]
            raise LeRobotFormatError(
                f"{self.root}: {key!r} is not a video feature (videos: {videos or 'none'})"
            )
        rows = np.flatnonzero(self.episodes["episode_index"].to_numpy() == episode)
        if len(rows) != 1:
            raise LeRobotFormatError(f"{self.root}: no episode {episode}")
        row = int(rows[0])
        length = int(self.episodes["length"].iloc[row])
        start = (
            float(self.episodes[f"videos/{key}/from_timestamp"].iloc[row])
            if self.version == "v3.0"
            else 0.0
        )
        path = self.video_files(key)[row]
        frames = decode_episode(path, start, start + length / self.fps)
        if len(frames) != length:
            raise LeRobotFormatError(
                f"{path}: episode {episode} has {length} frames but its video holds "
                f"{len(frames)}; the video is shorter than its episode"
            )
        return frames

    def episode_stats(
        self, keys: list[str], names: tuple[str, ...] | None = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """Per-episode stats stored in the metadata: v3.0 the ``stats/{key}/{stat}`` columns
        of the episodes parquet, v2.1 ``meta/episodes_stats.jsonl`` (v2.0 has none).

        Args:
            keys: Features to read.
            names: Stats to read (default: every one found).

        Returns:
            Feature -> stat -> float64 array with one row per episode (rows of
            :attr:`episodes`), stats in name order. A stat is returned only when every
            episode has it, a feature only when it has a stat.

        Raises:
            LeRobotFormatError: If a metadata file is damaged or a value is null.
        """
        if self.version == "v3.0":
            return self._episode_stats_v3(keys, names)
        path = self.root / LEGACY_EPISODES_STATS_PATH
        if not path.is_file() or not self.num_episodes:
            return {}
        by_ep = {int(r["episode_index"]): r.get("stats", {}) for r in read_jsonl(path)}
        out: dict[str, dict[str, np.ndarray]] = {}
        for key in keys:
            rows = [by_ep.get(int(e), {}).get(key) for e in self.episodes["episode_index"]]
            if any(not isinstance(r, dict) for r in rows):
                continue
            common = sorted(set.intersection(*(set(r) for r in rows)))
            for stat in common if names is None else [s for s in common if s in names]:
                try:
                    values = np.array([r[stat] for r in rows], dtype=np.float64)
                except (TypeError, ValueError) as e:
                    raise LeRobotFormatError(
                        f"{path}: stats[{key!r}][{stat!r}] is not a numeric array of one shape "
                        f"in every episode ({e}); recompute the stats"
                    ) from e
                out.setdefault(key, {})[stat] = values
        return out

    def _episode_stats_v3(
        self, keys: list[str], names: tuple[str, ...] | None
    ) -> dict[str, dict[str, np.ndarray]]:
        def wanted(col: str) -> bool:
            if not col.startswith("stats/") or "/" not in col[len("stats/") :]:
                return False
            key, stat = col[len("stats/") :].rsplit("/", 1)
            return key in keys and (names is None or stat in names)

        tables = self._episode_tables(wanted)
        common = set.intersection(*(set(t.column_names) for t in tables)) if tables else set()
        out: dict[str, dict[str, np.ndarray]] = {}
        for col in sorted(common):
            key, stat = col[len("stats/") :].rsplit("/", 1)
            parts = [column_to_numpy(t.column(col), col, self.root) for t in tables]
            out.setdefault(key, {})[stat] = np.concatenate(parts).astype(np.float64)
        return out

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
        return {k: column_to_numpy(table.column(k), k, path) for k in keys}

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
            raw = read_json(path)
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
                    name: stat_array(v, str(path), feat, name) for name, v in stats.items()
                }
                if "count" in out[feat]:
                    out[feat]["count"] = out[feat]["count"].astype(np.int64)
            return out
        ep_path = self.root / LEGACY_EPISODES_STATS_PATH
        if ep_path.is_file():
            per_feature: dict[str, list[dict[str, np.ndarray]]] = {}
            for row in read_jsonl(ep_path):
                where = f"{ep_path} (episode {row.get('episode_index')})"
                for feat, stats in row.get("stats", {}).items():
                    if wanted is not None and feat not in wanted:
                        continue
                    per_feature.setdefault(feat, []).append(
                        {name: stat_array(v, where, feat, name) for name, v in stats.items()}
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
