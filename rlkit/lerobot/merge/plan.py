"""Check every source and decide the whole merged output before anything is written: tasks,
features and schema, data files (present, row counts, columns, where each episode lies),
videos (present, or dropped with ``skip_missing_videos``), output episodes and data files."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlkit.envs.sim import RacingConfig
from rlkit.lerobot.env_meta import ENV_META_PATH, load_env_config
from rlkit.lerobot.files import parquet_errors
from rlkit.lerobot.layout import (
    DEFAULT_DATA_FILES_SIZE_IN_MB,
    DEFAULT_VIDEO_FILES_SIZE_IN_MB,
    INFO_PATH,
    LEGACY_EPISODES_PATH,
    FilePlanner,
    Layout,
    LeRobotFormatError,
    feature_shape,
)
from rlkit.lerobot.merge.config import MergeConfig
from rlkit.lerobot.merge.features import Feature, Padded, merge_features, output_schema
from rlkit.lerobot.meta import check_output
from rlkit.lerobot.reader import DatasetReader

logger = logging.getLogger(__name__)

MAX_LISTED = 50  # missing files listed one per line before summarising


@dataclass
class Source:
    pos: int
    ds: DatasetReader
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
    schema: pa.Schema
    visual_ep_stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.ds.root)


@dataclass
class Plan:
    version: str  # of the output
    sources: list[Source]
    features: dict[str, Feature]
    tasks: list[str]
    out_src: np.ndarray  # per merged episode: source position
    out_row: np.ndarray  # per merged episode: row in that source's episode table
    lengths: np.ndarray
    padded: Padded
    dropped: list[tuple[str, int]]  # (source folder, source episode_index) left out
    schema: pa.Schema
    chunks_size: int
    data_files_size_in_mb: float
    video_files_size_in_mb: float
    robot_type: Any
    out_file: np.ndarray | None = None  # v3.0: (E, 2) chunk_index, file_index of each episode
    env_config: RacingConfig | None = None  # the racing env, if every source shares it

    @property
    def bounds(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    @property
    def layout(self) -> Layout:
        videos = any(f.kind == "video" for f in self.features.values())
        return Layout.new(self.version, self.chunks_size, videos=videos)

    @property
    def row_bytes(self) -> int:
        """In-memory bytes of one row of the tabular features."""
        return sum(
            np.dtype(f.spec["dtype"]).itemsize * int(np.prod(feature_shape(f.spec)))
            for f in self.features.values()
            if f.tabular
        )


def fmt_list(lines: list[str]) -> str:
    shown = [f"  {x}" for x in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"  ... and {len(lines) - MAX_LISTED} more")
    return "\n".join(shown)


def check_paths(sources: list[Path], output: Path, overwrite: bool) -> None:
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


def make_plan(dss: list[DatasetReader], cfg: MergeConfig, pool: ThreadPoolExecutor) -> Plan:
    """Check every source and decide the whole output; raises before anything is written."""
    first = dss[0]
    for ds in dss[1:]:
        if ds.fps != first.fps:
            raise LeRobotFormatError(
                f"sources must share one fps: {first.root} has fps={first.fps}, {ds.root} has "
                f"fps={ds.fps}; resample one of them first"
            )
    features, padded = merge_features(dss, cfg)
    tasks, task_maps = _merge_tasks(dss)
    sources = _read_sources(dss, features, task_maps, pool)
    dropped = _drop_missing_videos(sources, cfg.skip_missing_videos, pool)
    if cfg.output_version == "v2.1":
        _check_v21_videos(sources)

    # ---- output episodes and parquet schema
    out_src = np.concatenate([np.full(int(s.keep.sum()), s.pos, dtype=np.int64) for s in sources])
    out_row = np.concatenate([np.flatnonzero(s.keep).astype(np.int64) for s in sources])
    if len(out_src) == 0:
        raise LeRobotFormatError("no episodes left to merge (every episode was dropped)")
    schema = output_schema(features, [s.schema for s in sources])
    visual_keys = [k for k, f in features.items() if f.kind in ("image", "video")]
    for s in sources:
        s.visual_ep_stats = _visual_episode_stats(s.ds, visual_keys)
    v3 = [ds.info for ds in dss if ds.version == "v3.0"]  # sizes: the first v3.0 source's
    size_mb = cfg.data_files_size_in_mb or float(
        v3[0].get("data_files_size_in_mb", DEFAULT_DATA_FILES_SIZE_IN_MB)
        if v3
        else DEFAULT_DATA_FILES_SIZE_IN_MB
    )
    video_mb = float(
        v3[0].get("video_files_size_in_mb", DEFAULT_VIDEO_FILES_SIZE_IN_MB)
        if v3
        else DEFAULT_VIDEO_FILES_SIZE_IN_MB
    )
    plan = Plan(
        version=cfg.output_version,
        sources=sources,
        features=features,
        tasks=tasks,
        out_src=out_src,
        out_row=out_row,
        lengths=np.concatenate([s.lengths[s.keep] for s in sources]),
        padded=padded,
        dropped=dropped,
        schema=schema,
        chunks_size=cfg.chunks_size or dss[0].layout.chunks_size,
        data_files_size_in_mb=size_mb,
        video_files_size_in_mb=video_mb,
        robot_type=first.info.get("robot_type"),
        env_config=_shared_env(dss),
    )
    if plan.version == "v3.0":
        plan.out_file = _output_files(plan)
    return plan


def _shared_env(dss: list[DatasetReader]) -> RacingConfig | None:
    """The racing env of the sources' ``meta/rlkit_env.json`` when they all have the same one,
    so BC and RL on the merged data drive that env; None (with a warning if some have one)."""
    configs = [load_env_config(ds.root) for ds in dss]
    if all(c is None for c in configs):
        return None  # not rlkit racing data
    if all(c == configs[0] for c in configs):
        return configs[0]
    missing = [str(ds.root) for ds, c in zip(dss, configs, strict=True) if c is None]
    dicts = [c.to_dict() for c in configs if c is not None]
    differ = [k for k in dicts[0] if any(d[k] != dicts[0][k] for d in dicts[1:])]
    detail = "; ".join(
        [f"{k}: " + " vs ".join(json.dumps(d[k]) for d in dicts) for k in differ]
        + ([f"none in {', '.join(missing)}"] if missing else [])
    )
    logger.warning(
        "the sources were recorded in different racing envs (%s): the output gets no %s, so "
        "train_bc.py will not evaluate it on tracks; merge the sources of one env to keep it",
        detail,
        ENV_META_PATH,
    )
    return None


def _merge_tasks(dss: list[DatasetReader]) -> tuple[list[str], list[np.ndarray]]:
    """Deduplicated task strings (first appearance in source order) and, per source, its
    ``task_index`` -> merged ``task_index``."""
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
    return tasks, task_maps


def _file_meta(path: Path) -> tuple[int, list[str]] | None:
    if not path.is_file():
        return None
    with parquet_errors(path):
        md = pq.read_metadata(path)
        return md.num_rows, md.schema.to_arrow_schema().names


def _read_sources(
    dss: list[DatasetReader],
    features: dict[str, Feature],
    task_maps: list[np.ndarray],
    pool: ThreadPoolExecutor,
) -> list[Source]:
    """Every source's data files (present, row counts, columns) and video files; raises
    listing every missing data file, or every inconsistency."""
    all_files = [ds.data_files() for ds in dss]
    flat = [f for files in all_files for f in files]
    metas = list(pool.map(_file_meta, flat))
    missing = [str(f) for f, m in zip(flat, metas, strict=True) if m is None]
    sources: list[Source] = []
    problems: list[str] = []
    k = 0
    for pos, (ds, files) in enumerate(zip(dss, all_files, strict=True)):
        file_metas = metas[k : k + len(files)]
        k += len(files)
        sources.append(_source(pos, ds, files, file_metas, features, task_maps[pos], problems))
    if missing:
        raise LeRobotFormatError(
            f"{len(missing)} data file(s) referenced by the sources do not exist:\n"
            f"{fmt_list(missing)}\nrestore them (a merger never substitutes another file)"
        )
    if problems:
        raise LeRobotFormatError("sources are inconsistent:\n" + fmt_list(problems))
    return sources


def _source(
    pos: int,
    ds: DatasetReader,
    files: list[Path],
    file_metas: list[tuple[int, list[str]] | None],
    features: dict[str, Feature],
    task_map: np.ndarray,
    problems: list[str],
) -> Source:
    """One source: where each episode's rows lie; its problems are appended to ``problems``."""
    eps = ds.episodes
    lengths = eps["length"].to_numpy().astype(np.int64)
    from_idx = eps["dataset_from_index"].to_numpy().astype(np.int64)
    file_rows = np.array([m[0] if m else 0 for m in file_metas], dtype=np.int64)
    needed = [key for key, ft in features.items() if ft.kind != "video"]
    for f, m in zip(files, file_metas, strict=True):
        absent = [key for key in needed if m is not None and key not in m[1]]
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
        problems.extend(bad[:MAX_LISTED])
    first_file = next((f for f, m in zip(files, file_metas, strict=True) if m), None)
    schema = pa.schema([])
    if first_file is not None:
        with parquet_errors(first_file):
            schema = pq.read_schema(first_file)
    videos, video_ts = _source_videos(ds, [k for k, f in features.items() if f.kind == "video"])
    return Source(
        pos=pos,
        ds=ds,
        files=files,
        file_rows=file_rows,
        ep_file=ep_file.astype(np.int64),
        ep_lo=ep_lo.astype(np.int64),
        lengths=lengths,
        ep_index=eps["episode_index"].to_numpy().astype(np.int64),
        keep=np.ones(len(eps), dtype=bool),
        task_map=task_map,
        videos=videos,
        video_ts=video_ts,
        schema=schema,
    )


def _source_videos(
    ds: DatasetReader, video_keys: list[str]
) -> tuple[dict[str, list[Path]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The video file of each episode, and (v3.0) its from/to timestamps inside the file."""
    if video_keys and ds.layout.video_path is None:
        raise LeRobotFormatError(
            f"{ds.root / INFO_PATH}: video features {video_keys} but video_path is null; "
            "set video_path"
        )
    eps = ds.episodes
    videos: dict[str, list[Path]] = {}
    video_ts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key in video_keys:
        if ds.version == "v3.0":
            names = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
            cols = [f"videos/{key}/{c}" for c in names]
            absent = [c for c in cols if c not in eps.columns]
            if absent:
                raise LeRobotFormatError(
                    f"{ds.root}: episode metadata lacks {absent} for video {key!r}; the "
                    "dataset's video index is incomplete"
                )
            video_ts[key] = (eps[cols[2]].to_numpy(np.float64), eps[cols[3]].to_numpy(np.float64))
        videos[key] = ds.video_files(key)
    return videos, video_ts


def _drop_missing_videos(
    sources: list[Source], skip: bool, pool: ThreadPoolExecutor
) -> list[tuple[str, int]]:
    """Raise listing every missing mp4, or (``skip``) drop those episodes; the dropped."""
    unique = sorted({p for s in sources for ps in s.videos.values() for p in ps})
    exists = dict(zip(unique, pool.map(Path.is_file, unique), strict=True))
    missing = [
        (s.pos, row, str(p))
        for s in sources
        for paths in s.videos.values()
        for row, p in enumerate(paths)
        if not exists[p]
    ]
    if not missing:
        return []
    if not skip:
        listed = sorted({m[2] for m in missing})
        raise LeRobotFormatError(
            f"{len(listed)} video file(s) referenced by the sources do not exist:\n"
            f"{fmt_list(listed)}\nrestore them, or pass --skip-missing-videos to drop "
            "those episodes (a merger never substitutes another episode's video)"
        )
    for pos, row, _ in missing:
        sources[pos].keep[row] = False
    dropped = [(s.name, int(s.ep_index[row])) for s in sources for row in np.flatnonzero(~s.keep)]
    logger.warning(
        "--skip-missing-videos: dropping %d episode(s) with missing video files:\n%s",
        len(dropped),
        fmt_list([f"{src} episode {ep}" for src, ep in dropped]),
    )
    return dropped


def _check_v21_videos(sources: list[Source]) -> None:
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
            f"several episodes (splitting them would mean re-encoding):\n{fmt_list(bad)}\n"
            "merge to --output-version v3.0 instead"
        )


def _visual_episode_stats(ds: DatasetReader, keys: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Per-episode image/video stats from the source metadata (rows of ``ds.episodes``), for
    the keys that have ``mean``, ``std`` and ``count`` for every episode."""
    stats = ds.episode_stats(keys) if keys else {}
    return {
        key: st
        for key, st in stats.items()
        if {"mean", "std", "count"} <= set(st) and len(st["count"]) == ds.num_episodes
    }


# ----------------------------------------------------------------------------- output files
def _output_files(plan: Plan) -> np.ndarray:
    """v3.0: the ``(chunk, file)`` of each output episode, sized by its estimated bytes."""
    extra = _extra_bytes_per_row(plan)
    ep_bytes = plan.lengths * (plan.row_bytes + extra[plan.out_src])
    planner = FilePlanner(plan.data_files_size_in_mb * 1024**2, plan.chunks_size)
    return np.stack(planner.assign(ep_bytes), axis=1)


def _extra_bytes_per_row(plan: Plan) -> np.ndarray:
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
