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

The modules follow the work: ``config`` (options, result, summary), ``features`` (merged
features and parquet schema), ``plan`` (every check, and the whole output decided before
anything is written), ``copy`` (rows and videos); this entry point pools the stats and writes
the metadata with :func:`rlkit.lerobot.meta.write_meta`, the writer's own.
"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from rlkit.lerobot.env_meta import ENV_META_PATH, env_meta_text
from rlkit.lerobot.layout import INDEX_FEATURES, STATS_PATH, LeRobotFormatError
from rlkit.lerobot.merge.config import MergeConfig, MergeResult, summary_text
from rlkit.lerobot.merge.copy import copy_data, copy_videos
from rlkit.lerobot.merge.plan import Plan, check_paths, fmt_list, make_plan
from rlkit.lerobot.meta import (
    DatasetMeta,
    new_dir,
    publish_dir,
    remove_stale_temps,
    temp_path,
    write_meta,
)
from rlkit.lerobot.reader import DatasetReader
from rlkit.lerobot.stats import aggregate_stacked, aggregate_stats, compute_stats
from rlkit.utils import available_cores

__all__ = ["MergeConfig", "MergeResult", "merge", "summary_text"]

logger = logging.getLogger(__name__)


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
    check_paths([Path(s) for s in cfg.sources], output, cfg.overwrite)
    remove_stale_temps(output)  # a killed merge's .NAME.tmp-PID (can be as big as the data)
    dss = [DatasetReader(s) for s in cfg.sources]
    workers = cfg.workers or min(8, max(2, available_cores()))
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = time.perf_counter() - t0 - sum(phases.values())

    with ThreadPoolExecutor(max_workers=workers) as pool:
        plan = make_plan(dss, cfg, pool)
        phase("plan")
        n_frames = int(plan.lengths.sum())
        exact = n_frames * plan.row_bytes <= cfg.stats_max_mb * 1024**2
        # the index columns' stats always come from the merged data (they are small)
        tabular = {k for k, f in plan.features.items() if f.tabular}
        keep_cols = set(INDEX_FEATURES) | (tabular if exact else set())
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(output)
        try:
            new_dir(tmp)
            video_cols, linked, copied = copy_videos(plan, tmp, cfg.copy, pool)
            ep_stats, columns = copy_data(plan, tmp, keep_cols, pool, 2 * workers, progress)
            phase("data")
            _write_meta(plan, tmp, ep_stats, columns, video_cols, pool)
            phase("stats_meta")
            if cfg.validate:
                _validate(tmp, output, workers)
            phase("validate")
            publish_dir(tmp, output, overwrite=cfg.overwrite)
        except BaseException:
            # stop the workers first: a running job must not recreate files inside tmp
            pool.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    out_file = plan.out_file
    result = MergeResult(
        output=output,
        version=plan.version,
        sources=len(dss),
        episodes=len(plan.lengths),
        frames=n_frames,
        tasks=len(plan.tasks),
        data_files=len(plan.lengths) if out_file is None else len({*map(tuple, out_file.tolist())}),
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
        *(result.sources, output, result.episodes, n_frames, result.wall_s, result.frames_per_s),
    )
    return result


def _validate(tmp: Path, output: Path, workers: int) -> None:
    from rlkit.lerobot.validate import validate_dataset

    # values=False: the float columns were checked for NaN/inf while converting
    problems = validate_dataset(tmp, workers=workers, values=False)
    if problems:
        raise LeRobotFormatError(
            f"the merged dataset failed validation, nothing was written to {output}:"
            f"\n{fmt_list(problems)}"
        )


# ----------------------------------------------------------------------------- stats + meta
def _write_meta(
    plan: Plan,
    tmp: Path,
    ep_stats: dict[str, dict[str, np.ndarray]],
    columns: dict[str, list[np.ndarray]],
    video_cols: dict[str, dict[str, np.ndarray]],
    pool: ThreadPoolExecutor,
) -> None:
    """Pool the stats and write ``meta/`` (per-episode stats: tabular features from the rows,
    images/videos from the sources' metadata)."""
    visual = {
        k: _pool_visual(plan, k) for k, f in plan.features.items() if f.kind in ("image", "video")
    }
    stats = _global_stats(plan, ep_stats, columns, pool)
    episode_stats = {}
    for key, ft in plan.features.items():
        if ft.tabular:
            episode_stats[key] = ep_stats[key]
        elif key in visual and visual[key][0] is not None:
            episode_stats[key] = visual[key][0]
    for key, (_, ds_stats) in visual.items():
        if ds_stats is not None:
            stats[key] = ds_stats
    meta = DatasetMeta(
        version=plan.version,
        fps=plan.sources[0].ds.fps,
        features={k: f.spec for k, f in plan.features.items()},
        tasks=plan.tasks,
        lengths=plan.lengths,
        episode_tasks=[
            list(plan.sources[int(s)].ds.episodes["tasks"].iloc[int(r)])
            for s, r in zip(plan.out_src, plan.out_row, strict=True)
        ],
        episode_stats=episode_stats,
        stats=stats,
        robot_type=plan.robot_type,
        chunks_size=plan.chunks_size,
        data_files=plan.out_file,
        videos=video_cols,
        data_files_size_in_mb=plan.data_files_size_in_mb,
        video_files_size_in_mb=plan.video_files_size_in_mb,
    )
    write_meta(tmp, meta)
    if plan.env_config is not None:  # rlkit racing data: the same file the collector writes
        (tmp / ENV_META_PATH).write_text(env_meta_text(plan.env_config))


def _pool_visual(
    plan: Plan, key: str
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
            groups.append(aggregate_stacked({k: v[s.keep] for k, v in eps.items()}))
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
    plan: Plan,
    ep_stats: dict[str, dict[str, np.ndarray]],
    columns: dict[str, list[np.ndarray]],
    pool: ThreadPoolExecutor,
) -> dict[str, dict[str, np.ndarray]]:
    """Tabular features: recomputed from ``columns`` where kept, else pooled per episode."""
    jobs: dict[str, Future[dict[str, np.ndarray]]] = {}
    for key, cols in columns.items():
        jobs[key] = pool.submit(lambda c=cols: compute_stats(np.concatenate(c)))
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, ft in plan.features.items():
        if not ft.tabular:
            continue
        out[key] = jobs[key].result() if key in jobs else aggregate_stacked(ep_stats[key])
        if ft.spec.get("shape") == [1] or ft.kind != "vector":
            out[key] = {k: np.asarray(v).reshape(-1) for k, v in out[key].items()}
    return out
