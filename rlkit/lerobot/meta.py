"""Write a dataset's metadata, and publish the finished folder: the one writer that
:class:`~rlkit.lerobot.writer.DatasetWriter` and the merger share (as lerobot's
``datasets/utils.py`` serves its writer and ``aggregate.py``).

What :func:`write_meta` writes, given the episodes and their stats::

    meta/info.json                       totals, fps, features, path templates (both versions)
    meta/stats.json                      {feature: {stat: list}} (both versions)
    v3.0  meta/tasks.parquet             pandas frame indexed by task string, column task_index
          meta/episodes/chunk-000/file-000.parquet
                                         one row per episode: episode_index, tasks, length,
                                         data/chunk_index, data/file_index, dataset_from_index,
                                         dataset_to_index, videos/{key}/*, stats/{feature}/{stat},
                                         meta/episodes/chunk_index, meta/episodes/file_index
    v2.1  meta/tasks.jsonl  meta/episodes.jsonl  meta/episodes_stats.jsonl (min max mean std count)

Every writer builds its dataset in a hidden sibling folder (:func:`temp_path`) and moves it
into place with :func:`publish_dir`; :func:`check_output` refuses an output it may not
replace before any work starts.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rlkit.lerobot.layout import (
    DEFAULT_CHUNKS_SIZE,
    DEFAULT_DATA_FILES_SIZE_IN_MB,
    DEFAULT_VIDEO_FILES_SIZE_IN_MB,
    EPISODES_PATH,
    INFO_PATH,
    LEGACY_EPISODES_PATH,
    LEGACY_EPISODES_STATS_PATH,
    LEGACY_TASKS_PATH,
    STATS_PATH,
    TASKS_PATH,
    Layout,
    list_column,
)
from rlkit.lerobot.stats import BASIC_STATS
from rlkit.rundir import check_replaceable, clean_stale_temps, say
from rlkit.utils import replace_dir


@dataclass
class DatasetMeta:
    """Everything :func:`write_meta` needs; arrays have one row per episode."""

    version: str  # "v3.0" or "v2.1"
    fps: int
    features: dict[str, dict[str, Any]]  # info.json features, in column order
    tasks: list[str]  # row order = task_index
    lengths: np.ndarray
    episode_tasks: list[list[str]]  # task strings of each episode
    episode_stats: dict[str, dict[str, np.ndarray]]  # feature -> stat -> (E, *stat shape)
    stats: dict[str, dict[str, np.ndarray]]  # feature -> stat -> dataset-level value
    robot_type: Any = None
    chunks_size: int = DEFAULT_CHUNKS_SIZE
    data_files: np.ndarray | None = None  # v3.0: (E, 2) chunk_index, file_index
    videos: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # v3.0 videos/{k}/*
    data_files_size_in_mb: float = DEFAULT_DATA_FILES_SIZE_IN_MB
    video_files_size_in_mb: float = DEFAULT_VIDEO_FILES_SIZE_IN_MB

    @property
    def bounds(self) -> np.ndarray:
        """E+1 global row offsets: episode ``i`` is rows ``[b[i], b[i+1])``."""
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)


def write_meta(root: Path, meta: DatasetMeta) -> None:
    """Write ``meta/`` of the dataset at ``root`` (module docstring)."""
    (root / "meta").mkdir(parents=True, exist_ok=True)
    if meta.version == "v3.0":
        _write_episodes_v3(root, meta)
        pd.DataFrame(
            {"task_index": np.arange(len(meta.tasks), dtype=np.int64)},
            index=pd.Index(meta.tasks, name="task"),
        ).to_parquet(root / TASKS_PATH)
    else:
        _write_episodes_v21(root, meta)
        (root / LEGACY_TASKS_PATH).write_text(
            "".join(
                json.dumps({"task_index": i, "task": t}, ensure_ascii=False) + "\n"
                for i, t in enumerate(meta.tasks)
            ),
            encoding="utf-8",
        )
    # v2.1: lerobot pools episodes_stats.jsonl itself; stats.json (exact, with quantiles) is
    # extra, read first by rlkit's reader.
    stats = {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in meta.stats.items()}
    _write_json(root / STATS_PATH, stats)
    _write_json(root / INFO_PATH, info_json(meta))


def info_json(meta: DatasetMeta) -> dict[str, Any]:
    """``meta/info.json``, keys in lerobot's order."""
    n_eps = len(meta.lengths)
    n_video = sum(1 for f in meta.features.values() if f.get("dtype") == "video")
    layout = Layout.new(meta.version, meta.chunks_size, videos=n_video > 0)
    info: dict[str, Any] = {
        "codebase_version": meta.version,
        "robot_type": meta.robot_type,
        "total_episodes": n_eps,
        "total_frames": int(meta.lengths.sum()),
        "total_tasks": len(meta.tasks),
    }
    if meta.version == "v2.1":
        info["total_videos"] = n_eps * n_video
        info["total_chunks"] = -(-n_eps // meta.chunks_size)
    info["chunks_size"] = int(meta.chunks_size)
    if meta.version == "v3.0":
        info["data_files_size_in_mb"] = _number(meta.data_files_size_in_mb)
        info["video_files_size_in_mb"] = meta.video_files_size_in_mb  # as given
    return info | {
        "fps": int(meta.fps),
        "splits": {"train": f"0:{n_eps}"},
        "data_path": layout.data_path,
        "video_path": layout.video_path,
        "features": meta.features,
    }


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=4, ensure_ascii=False)


def _write_episodes_v3(root: Path, meta: DatasetMeta) -> None:
    assert meta.data_files is not None
    n_eps, bounds = len(meta.lengths), meta.bounds
    episodes: dict[str, pa.Array] = {
        "episode_index": pa.array(np.arange(n_eps, dtype=np.int64)),
        "tasks": pa.array(meta.episode_tasks, type=pa.list_(pa.string())),
        "length": pa.array(np.asarray(meta.lengths, dtype=np.int64)),
        "data/chunk_index": pa.array(meta.data_files[:, 0]),
        "data/file_index": pa.array(meta.data_files[:, 1]),
        "dataset_from_index": pa.array(bounds[:-1]),
        "dataset_to_index": pa.array(bounds[1:]),
    }
    for key, cols in meta.videos.items():
        for name, values in cols.items():
            episodes[f"videos/{key}/{name}"] = pa.array(values)
    for key, stats in meta.episode_stats.items():
        for stat, values in stats.items():
            values = values.astype(np.int64) if stat == "count" else values
            flat = values.ndim <= 2 or stat == "count"  # image stats (E, 3, 1, 1) stay nested
            episodes[f"stats/{key}/{stat}"] = list_column(
                values.reshape(n_eps, -1) if flat else values
            )
    zeros = np.zeros(n_eps, dtype=np.int64)
    episodes["meta/episodes/chunk_index"] = pa.array(zeros)
    episodes["meta/episodes/file_index"] = pa.array(zeros)
    path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(episodes), path)


def _write_episodes_v21(root: Path, meta: DatasetMeta) -> None:
    lines_ep = [
        json.dumps({"episode_index": e, "tasks": tasks, "length": int(n)})
        for e, (tasks, n) in enumerate(zip(meta.episode_tasks, meta.lengths, strict=True))
    ]
    # one tolist() per stat, not per episode
    per_stat = {
        key: {
            stat: (v.astype(np.int64) if stat == "count" else v).tolist()
            for stat, v in st.items()
            if stat in BASIC_STATS
        }
        for key, st in meta.episode_stats.items()
    }
    lines_stats = [
        json.dumps(
            {
                "episode_index": e,
                "stats": {k: {s: v[e] for s, v in st.items()} for k, st in per_stat.items()},
            }
        )
        for e in range(len(meta.lengths))
    ]
    (root / LEGACY_EPISODES_PATH).write_text("\n".join(lines_ep) + "\n", encoding="utf-8")
    (root / LEGACY_EPISODES_STATS_PATH).write_text("\n".join(lines_stats) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- the output folder
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


def temp_path(root: Path) -> Path:
    """The hidden sibling folder this process builds ``root`` in."""
    return root.parent / f".{root.name}.tmp-{os.getpid()}"


def new_dir(path: Path) -> None:
    """Create ``path/meta`` in an empty ``path`` (a leftover of this pid is removed)."""
    if path.exists():
        shutil.rmtree(path)
    (path / "meta").mkdir(parents=True)


def publish_dir(tmp: Path, root: Path, *, overwrite: bool) -> None:
    """Move the finished folder ``tmp`` to ``root`` (:func:`rlkit.utils.replace_dir`: an
    existing ``root`` is removed only once the new one is in place). This is the one place
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
    replace_dir(tmp, root)
