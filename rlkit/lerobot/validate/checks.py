"""The table and metadata checks of :func:`validate_dataset` (the list is in
:mod:`rlkit.lerobot.validate`); the video checks are in :mod:`rlkit.lerobot.validate.videos`."""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
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
    INDEX_FEATURES,
    INFO_PATH,
    LEGACY_EPISODES_STATS_PATH,
    NON_TABULAR_DTYPES,
    STATS_PATH,
    TIMESTAMP_TOL_S,
    LeRobotFormatError,
    is_float,
    type_problem,
)
from rlkit.lerobot.reader import DatasetReader
from rlkit.lerobot.validate.problems import MAX_REPORTED, capped
from rlkit.lerobot.validate.videos import check_video_lengths, check_videos
from rlkit.utils import available_cores

__all__ = ["validate_dataset"]

logger = logging.getLogger(__name__)


def validate_dataset(
    root: str | Path, *, workers: int | None = None, values: bool = True
) -> list[str]:
    """Check the dataset at ``root`` against the loader's invariants (module docstring).

    Args:
        root: Dataset folder (v2.0, v2.1 or v3.0).
        workers: Threads for reading schemas and probing videos (default: the core count).
        values: Read the float feature columns and report NaN/inf (the merger checks them
            while converting the rows and skips this second read).

    Returns:
        Human-readable problems, each naming the file or key and the value; empty when valid.
        A damaged file is a problem naming it, never an exception.
    """
    try:
        ds = DatasetReader(root)
    except (OSError, LeRobotFormatError) as e:
        return [str(e)]
    missing_index = [k for k in INDEX_FEATURES if k not in ds.features]
    files_ok = all(f.is_file() for f in ds.data_files())
    # The checks read different files/columns and release the GIL in pyarrow: run them
    # side by side.
    # (One thread per check; their per-file work goes to a separate pool, so a check that
    # waits on file jobs can never starve them.)
    n_io = workers or max(2, available_cores())
    with ThreadPoolExecutor(6) as checks, ThreadPoolExecutor(n_io) as pool:
        jobs = [
            checks.submit(_check_metadata, ds),
            checks.submit(_check_schemas, ds, pool),
            checks.submit(_check_episode_tasks, ds) if files_ok else None,
            checks.submit(_check_episode_counts, ds),
            checks.submit(check_video_lengths, ds, pool),
            checks.submit(_check_values, ds, pool) if values else None,
        ]
        problems: list[str] = []
        for job in jobs:
            if job is None:
                continue
            try:
                found = job.result()
            except (OSError, LeRobotFormatError) as e:  # a file that broke a check midway
                found = [str(e)]
            problems.extend(p for p in found if p not in problems)
    if missing_index:
        problems.append(f"meta/info.json features lack the index features {missing_index}")
    return problems


def _check_metadata(ds: DatasetReader) -> list[str]:
    """Episodes, tasks, totals, referenced files, index columns and stats files."""
    lengths = _episode_arrays(ds)[1]
    problems = _check_episodes(ds)
    problems += _check_tasks_and_totals(ds, lengths)
    files = ds.data_files()
    missing = [f"data file {f} is referenced but does not exist" for f in files if not f.is_file()]
    problems += capped(missing, "missing data files")
    problems += check_videos(ds)
    # frame-level checks only when all data is present (row positions are otherwise unknown)
    if not missing and len(lengths):
        problems += _check_frames(ds, files)
    return problems + _check_stats(ds)


def _episode_arrays(ds: DatasetReader) -> tuple[np.ndarray, ...]:
    """``episode_index``, ``length``, ``dataset_from_index``, ``dataset_to_index`` (int64)."""
    cols = ("episode_index", "length", "dataset_from_index", "dataset_to_index")
    return tuple(ds.episodes[c].to_numpy().astype(np.int64) for c in cols)


def _check_episodes(ds: DatasetReader) -> list[str]:
    ep_idx, lengths, from_idx, to_idx = _episode_arrays(ds)
    problems: list[str] = []
    n_eps = len(ep_idx)
    if not np.array_equal(ep_idx, np.arange(n_eps)):
        bad = int(np.flatnonzero(ep_idx != np.arange(n_eps))[0])
        problems.append(
            f"episode indices must be 0..{n_eps - 1} without gaps (row i has episode_index i);"
            f" row {bad} has episode_index {ep_idx[bad]}"
        )
    if np.any(lengths <= 0):
        problems.append(f"episodes {ep_idx[lengths <= 0][:MAX_REPORTED].tolist()} are empty")
    if ds.version != "v3.0":
        return problems
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
    return problems


def _check_tasks_and_totals(ds: DatasetReader, lengths: np.ndarray) -> list[str]:
    problems: list[str] = []
    if not np.array_equal(ds.task_indices, np.arange(len(ds.tasks))):
        problems.append(
            f"tasks must be ordered by task_index 0..{len(ds.tasks) - 1}, got task_index "
            f"values {ds.task_indices[:10].tolist()}"
        )
    unknown = sorted({t for ts in ds.episodes["tasks"] for t in ts} - set(ds.tasks))
    if unknown:
        problems.append(f"episodes reference tasks missing from the tasks table: {unknown[:5]}")
    info_path, n_eps = ds.root / INFO_PATH, len(lengths)
    for key, actual in (
        ("total_episodes", n_eps),
        ("total_frames", int(lengths.sum())),
        ("total_tasks", len(ds.tasks)),
    ):
        if key not in ds.info:
            problems.append(f"{info_path} lacks {key!r} (should be {actual})")
        elif int(ds.info[key]) != actual:
            problems.append(f"{info_path}: {key} is {ds.info[key]} but the dataset has {actual}")
    splits = ds.info.get("splits")
    if not isinstance(splits, dict) or not splits:
        return [*problems, f"{info_path}: 'splits' missing; expected {{'train': '0:{n_eps}'}}"]
    covered = np.zeros(n_eps, dtype=bool)
    for name, spec in splits.items():
        m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(spec))
        if not m:
            return [*problems, f"{info_path}: split {name!r} must look like 'a:b', got {spec!r}"]
        covered[int(m.group(1)) : int(m.group(2))] = True
    if not covered.all():
        problems.append(
            f"{info_path}: splits {splits} do not cover episodes "
            f"{np.flatnonzero(~covered)[:5].tolist()}...; expected {{'train': '0:{n_eps}'}}"
        )
    return problems


def _check_frames(ds: DatasetReader, files: list[Path]) -> list[str]:
    """Row counts of the data files against the episodes, then the index columns."""
    ep_idx, lengths, from_idx, to_idx = _episode_arrays(ds)
    rows: list[int] = []
    unreadable: list[str] = []
    for f in files:
        try:
            with parquet_errors(f):
                rows.append(pq.read_metadata(f).num_rows)
        except LeRobotFormatError as e:
            unreadable.append(str(e))
    if unreadable:  # row positions are unknown past an unreadable file
        return capped(unreadable, "unreadable data files")
    file_rows = np.array(rows, dtype=np.int64)
    n_rows = int(file_rows.sum())
    if n_rows != int(lengths.sum()):
        return [
            f"data files hold {n_rows} rows but the episode lengths sum to {int(lengths.sum())}"
        ]
    problems: list[str] = []
    if ds.version == "v3.0" and {"data/chunk_index", "data/file_index"} <= set(ds.episodes):
        # each episode's [from, to) must lie inside the file its metadata points to
        starts = np.concatenate([[0], np.cumsum(file_rows)[:-1]])
        pos = {f: i for i, f in enumerate(files)}
        which = np.array(
            [
                pos[ds.root / ds.layout.data_file((c, f))]
                for c, f in zip(
                    ds.episodes["data/chunk_index"], ds.episodes["data/file_index"], strict=True
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
    return problems + _check_index_columns(ds, ep_idx, lengths, from_idx, n_rows)


def _check_index_columns(
    ds: DatasetReader, ep_idx: np.ndarray, lengths: np.ndarray, from_idx: np.ndarray, n_rows: int
) -> list[str]:
    try:
        cols = ds.load_columns([k for k in INDEX_FEATURES if k in ds.features])
    except (LeRobotFormatError, FileNotFoundError) as e:
        return [str(e)]
    problems: list[str] = []
    expected_ep = np.repeat(ep_idx, lengths)
    starts = from_idx if ds.version == "v3.0" else np.concatenate([[0], np.cumsum(lengths)[:-1]])
    checks = (
        ("episode_index", expected_ep, "must match the episode metadata"),
        ("index", np.arange(n_rows), "must equal the global row position"),
        ("frame_index", np.arange(n_rows) - np.repeat(starts, lengths), "must count from 0 "
         "within each episode"),
    )  # fmt: skip
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
        inside = np.ones(len(ts) - 1, dtype=bool)
        inside[np.cumsum(lengths)[:-1] - 1] = False  # episode boundaries are not steps
        bad = np.flatnonzero(inside & (np.abs(np.diff(ts) - 1.0 / ds.fps) > TIMESTAMP_TOL_S))
        if len(bad):
            row = int(bad[0]) + 1
            problems.append(
                f"timestamp must step by 1/fps={1.0 / ds.fps:.6f}s within episodes; "
                f"{len(bad)} steps differ, first at row {row} (episode {expected_ep[row]}): "
                f"{ts[row - 1]:.6f} -> {ts[row]:.6f}"
            )
    else:
        problems.append("data lacks the 'timestamp' column")
    if "task_index" in cols:
        ti = cols["task_index"]
        bad = np.flatnonzero((ti < 0) | (ti >= len(ds.tasks)))
        if len(bad):
            problems.append(
                f"task_index must be in 0..{len(ds.tasks) - 1} (rows of the tasks table); "
                f"{len(bad)} rows are not, first row {int(bad[0])} has {ti[bad[0]]}"
            )
    return problems


def _check_stats(ds: DatasetReader) -> list[str]:
    """Shapes and finiteness of ``stats.json`` (or v2.1's ``episodes_stats.jsonl``)."""
    stats_path = ds.root / STATS_PATH
    legacy = ds.root / LEGACY_EPISODES_STATS_PATH
    if stats_path.is_file():
        raw = read_json(stats_path)
        if not isinstance(raw, dict):
            return [f"{stats_path} must hold {{feature: {{stat: values}}}}, got {raw!r:.60}"]
        groups, sample = [(str(stats_path), raw)], 1
    elif legacy.is_file():
        groups = [
            (f"{legacy} (episode {r.get('episode_index')})", r.get("stats", {}))
            for r in read_jsonl(legacy)
        ]
        sample = 50  # shapes are uniform: a sample is enough; values are checked in all
    else:
        return []  # stats are optional for v2.0; computed on demand
    problems: list[str] = []
    bad_values: list[str] = []
    for i, (where, stats) in enumerate(groups):
        if not isinstance(stats, dict):
            problems.append(f"{where}: stats must map features to stats, got {stats!r:.60}")
            continue
        for feat, fstats in stats.items():
            ft = ds.features.get(feat)
            if ft is None or not isinstance(fstats, dict):
                continue
            shape = tuple(int(d) for d in ft.get("shape") or (1,))
            expected = (3, 1, 1) if ft.get("dtype") in NON_TABULAR_DTYPES else shape
            for name, value in fstats.items():
                try:
                    stat_array(value, where, feat, name)
                except LeRobotFormatError as e:
                    bad_values.append(str(e))
                    continue
                got, want = np.shape(value), (1,) if name == "count" else expected
                if i < sample and got != want and len(problems) < 20:
                    problems.append(
                        f"{where}: stats[{feat!r}][{name!r}] has shape {got}, expected {want}"
                    )
    return problems + capped(bad_values, "non-finite stats")


# ----------------------------------------------------------------------------- data files
def _check_schemas(ds: DatasetReader, pool: ThreadPoolExecutor) -> list[str]:
    files = [f for f in ds.data_files() if f.is_file()]
    tabular = {k: ft for k, ft in ds.features.items() if ft.get("dtype") != "video"}
    problems: list[str] = []
    seen: set[str] = set()

    def read_schema(path: Path) -> pa.Schema | str:
        try:
            with parquet_errors(path):
                return pq.read_schema(path)
        except LeRobotFormatError as e:
            return str(e)

    for path, schema in zip(files, pool.map(read_schema, files), strict=True):
        if isinstance(schema, str):
            problems.append(schema)
            continue
        for key, ft in tabular.items():
            if key not in schema.names:
                msg = f"{path} lacks column {key!r} declared in meta/info.json"
            else:
                why = type_problem(key, ft, schema.field(key).type)
                msg = f"{path}: {why}" if why else ""
            if msg:
                problems.append(msg)
        undeclared = [n for n in schema.names if n not in ds.features]
        if undeclared and "undeclared" not in seen:
            seen.add("undeclared")
            problems.append(
                f"{path} has columns {undeclared} not declared in meta/info.json features"
            )
        if len(problems) > MAX_REPORTED:
            problems.append("... (more schema problems not listed)")
            break
    return problems


def _file_nonfinite(path: Path, keys: list[str]) -> list[str]:
    """NaN/inf in the float columns ``keys`` of one data file, read a row group at a time."""
    problems: list[str] = []
    with parquet_errors(path), pq.ParquetFile(path) as pf:
        present = [k for k in keys if k in pf.schema_arrow.names]  # absent: _check_schemas
        if not present:
            return problems
        bad: dict[str, list[int]] = {}  # key -> [count, first row]
        broken: set[str] = set()
        offset = 0
        for rg in range(pf.metadata.num_row_groups):
            table = pf.read_row_group(rg, columns=present)
            for key in present:
                if key in broken:
                    continue
                try:
                    rows = nonfinite_rows(column_to_numpy(table.column(key), key, path))
                except LeRobotFormatError as e:  # e.g. null rows: reported once per column
                    problems.append(str(e))
                    broken.add(key)
                    continue
                if len(rows):
                    seen = bad.setdefault(key, [0, offset + int(rows[0])])
                    seen[0] += len(rows)
            offset += table.num_rows
    for key, (count, first) in bad.items():
        problems.append(
            f"{path}: feature {key!r} holds NaN/inf in {count} row(s) (first at row {first} of "
            "the file); clean or drop those frames"
        )
    return problems


def _check_values(ds: DatasetReader, pool: ThreadPoolExecutor) -> list[str]:
    keys = [k for k, ft in ds.features.items() if is_float(ft)]
    files = [f for f in ds.data_files() if f.is_file()]
    if not keys or not files:
        return []

    def check(path: Path) -> list[str]:
        try:
            return _file_nonfinite(path, keys)
        except LeRobotFormatError as e:
            return [str(e)]

    problems: list[str] = []
    for found in pool.map(check, files):
        problems.extend(found)
    return capped(problems, "non-finite columns")


def _check_episode_tasks(ds: DatasetReader) -> list[str]:
    if "task_index" not in ds.features or not ds.num_episodes:
        return []
    try:
        cols = ds.load_columns(["episode_index", "task_index"])
    except (LeRobotFormatError, FileNotFoundError) as e:
        return [str(e)]
    ep, ti = cols["episode_index"].astype(np.int64), cols["task_index"].astype(np.int64)
    if len(ti) and (ti.min() < 0 or ti.max() >= len(ds.tasks)):
        return []  # reported by _check_index_columns
    # (episode, task) pairs, O(N): runs of equal pairs first, then the few distinct runs
    key = ep * len(ds.tasks) + ti
    starts = np.concatenate([[0], np.flatnonzero(np.diff(key)) + 1]) if len(key) else key
    runs = np.unique(key[starts])
    from_data: dict[int, set[str]] = {}
    for e, t in zip((runs // len(ds.tasks)).tolist(), (runs % len(ds.tasks)).tolist(), strict=True):
        from_data.setdefault(e, set()).add(ds.tasks[t])
    problems = []
    for e, tasks in zip(ds.episodes["episode_index"], ds.episodes["tasks"], strict=True):
        got = from_data.get(int(e), set())
        if set(tasks) != got:
            problems.append(
                f"episode {int(e)} lists tasks {sorted(tasks)} but its rows have task_index "
                f"values meaning {sorted(got)}"
            )
            if len(problems) >= MAX_REPORTED:
                break
    return problems


def _check_episode_counts(ds: DatasetReader) -> list[str]:
    tabular = [
        k for k, ft in ds.features.items() if ft.get("dtype") not in ("image", "video", "string")
    ]
    lengths = ds.episodes["length"].to_numpy().astype(np.int64)
    problems = []
    for key, stats in ds.episode_stats(tabular, names=("count",)).items():
        c = stats["count"].reshape(len(stats["count"]), -1)[:, 0]
        if len(c) == len(lengths) and not np.array_equal(c, lengths):
            i = int(np.flatnonzero(c != lengths)[0])
            problems.append(
                f"per-episode stats of {key!r}: episode {int(ds.episodes['episode_index'].iloc[i])}"
                f" has count {int(c[i])} but length {int(lengths[i])}"
            )
            if len(problems) >= MAX_REPORTED:
                break
    return problems
