"""Check a local LeRobot dataset against the invariants lerobot's loader assumes.

:func:`validate_dataset` runs :meth:`LeRobotDataset.validate` (contiguous episode indices,
``index`` = row position, ``frame_index`` from 0, ``timestamp`` steps of ``1/fps``, task
order, ``info.json`` totals and splits, referenced files present, stats shapes, v3.0 episode
ranges) and adds the checks that need more than the index columns:

- every data file's parquet columns against ``info.json`` features: each declared feature is
  a column, no undeclared columns, the parquet type fits the declared dtype and shape
  (``fixed_size_list`` length = shape, list values numeric for numeric features, floats at
  least as wide as declared: a ``float64`` feature stored as float32 is reported, pandas'
  ``list<double>`` under a ``float32`` feature is read and cast; ``image`` a struct with
  ``bytes``);
- every data file readable as parquet (a zero-byte or truncated file is named, not a
  traceback), and the float feature columns free of NaN/inf;
- ``stats.json`` / ``episodes_stats.jsonl`` values finite (checked by
  :meth:`LeRobotDataset.validate`);
- each episode's ``tasks`` equal the task strings of its rows' ``task_index``;
- per-episode stats: ``count`` equals the episode length for tabular features;
- video files long enough: the last frame of every episode (``to_timestamp - 1/fps`` in
  v3.0, ``(length - 1)/fps`` in v2.x) lies inside the mp4's duration (probed with PyAV;
  skipped with a warning when ``av`` is not installed).

Usage: ``rlkit-validate-lerobot DIR`` (exit code 0 valid, 1 problems found).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlkit.lerobot.reader import (
    EPISODES_DIR,
    INDEX_FEATURES,
    LEGACY_EPISODES_STATS_PATH,
    LeRobotDataset,
    LeRobotFormatError,
    _column_to_numpy,
    _read_jsonl,
    nonfinite_rows,
    open_dataset,
    parquet_errors,
)
from rlkit.utils import available_cores

__all__ = ["validate_dataset", "video_duration_s"]

logger = logging.getLogger(__name__)

_MAX_REPORTED = 5
_TS_TOL_S = 1e-4


def video_duration_s(path: str | Path) -> float:
    """Duration in seconds of the first video stream of an mp4 (PyAV).

    Raises:
        ImportError: If PyAV is not installed (``pip install av`` or ``pip install rlkit[video]``).
        LeRobotFormatError: If the file cannot be opened as a video.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise LeRobotFormatError(f"{path} has no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1e6  # microseconds
            if stream.frames and stream.average_rate:
                return float(stream.frames / stream.average_rate)
    except av.error.FFmpegError as e:  # type: ignore[attr-defined]
        raise LeRobotFormatError(f"{path} is not a readable video ({e}); re-encode it") from e
    raise LeRobotFormatError(f"{path}: cannot tell the video duration; re-encode it")


def _type_problem(key: str, ft: dict, typ: pa.DataType) -> str | None:
    """Why parquet type ``typ`` cannot hold feature ``ft`` (None when it can)."""
    dtype = str(ft.get("dtype"))
    shape = [int(x) for x in ft.get("shape") or [1]]
    if dtype == "image":
        if pa.types.is_struct(typ) and typ.get_field_index("bytes") >= 0:
            return None
        return f"image feature {key!r} must be a struct<bytes, path>, got {typ}"
    if dtype == "string":
        ok = pa.types.is_string(typ) or pa.types.is_large_string(typ)
        return None if ok else f"string feature {key!r} has parquet type {typ}"
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        return None  # a dtype rlkit does not know: nothing to compare
    value = typ
    width = None
    if pa.types.is_fixed_size_list(typ):
        value, width = typ.value_type, typ.list_size
    elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
        value = typ.value_type
    elif shape != [1]:
        return f"feature {key!r} declares shape {shape} but its parquet column is scalar {typ}"
    if pa.types.is_list(value) or pa.types.is_fixed_size_list(value):
        return None  # nested (multi-dim) features: shape checked by the reader when loaded
    if width is not None and len(shape) == 1 and width != shape[0]:
        return f"feature {key!r} declares shape {shape} but its parquet column is {typ}"
    kinds = {
        "f": pa.types.is_floating(value),
        "i": pa.types.is_integer(value),
        "u": pa.types.is_integer(value),
        "b": pa.types.is_boolean(value),
    }
    if not kinds.get(kind, True):
        return f"feature {key!r} is declared {dtype} but its parquet values are {value}"
    if (
        kind == "f"
        and pa.types.is_floating(value)
        and value.bit_width < np.dtype(dtype).itemsize * 8
    ):
        # e.g. float64 declared over float32 data: the declaration promises a precision the
        # file does not hold. (Wider data than declared, e.g. pandas' list<double> under a
        # float32 feature, is read and cast to the declared dtype: accepted.)
        stored = np.dtype(value.to_pandas_dtype())
        return (
            f"feature {key!r} is declared {dtype} but its parquet values are {stored}; "
            f"declare it {stored} in meta/info.json or rewrite the column as {dtype}"
        )
    return None


def _check_schemas(ds: LeRobotDataset, pool: ThreadPoolExecutor) -> list[str]:
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
                why = _type_problem(key, ft, schema.field(key).type)
                msg = f"{path}: {why}" if why else ""
            if msg:
                problems.append(msg)
        undeclared = [n for n in schema.names if n not in ds.features]
        if undeclared and "undeclared" not in seen:
            seen.add("undeclared")
            problems.append(
                f"{path} has columns {undeclared} not declared in meta/info.json features"
            )
        if len(problems) > _MAX_REPORTED:
            problems.append("... (more schema problems not listed)")
            break
    return problems


def _float_features(ds: LeRobotDataset) -> list[str]:
    keys = []
    for key, ft in ds.features.items():
        try:
            if np.dtype(str(ft.get("dtype"))).kind == "f":
                keys.append(key)
        except TypeError:
            continue  # image/video/string or a dtype rlkit does not know
    return keys


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
                    rows = nonfinite_rows(_column_to_numpy(table.column(key), key, path))
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


def _check_values(ds: LeRobotDataset, pool: ThreadPoolExecutor) -> list[str]:
    keys = _float_features(ds)
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
    if len(problems) > _MAX_REPORTED:
        more = len(problems) - _MAX_REPORTED
        problems = [*problems[:_MAX_REPORTED], f"... and {more} more non-finite columns"]
    return problems


def _check_episode_tasks(ds: LeRobotDataset) -> list[str]:
    if "task_index" not in ds.features or not ds.num_episodes:
        return []
    try:
        cols = ds.load_columns(["episode_index", "task_index"])
    except (LeRobotFormatError, FileNotFoundError) as e:
        return [str(e)]
    ep, ti = cols["episode_index"].astype(np.int64), cols["task_index"].astype(np.int64)
    if len(ti) and (ti.min() < 0 or ti.max() >= len(ds.tasks)):
        return []  # reported by LeRobotDataset.validate
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
            if len(problems) >= _MAX_REPORTED:
                break
    return problems


def _check_episode_counts(ds: LeRobotDataset) -> list[str]:
    tabular = [
        k for k, ft in ds.features.items() if ft.get("dtype") not in ("image", "video", "string")
    ]
    lengths = ds.episodes["length"].to_numpy().astype(np.int64)
    counts: dict[str, np.ndarray] = {}
    if ds.version == "v3.0":
        files = sorted((ds.root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        for key in tabular:
            col = f"stats/{key}/count"
            parts = []
            for f in files:
                with parquet_errors(f):
                    if col in pq.read_schema(f).names:
                        parts.append(pq.read_table(f, columns=[col]).column(0))
            if len(parts) == len(files) and parts:
                values = pa.chunked_array(
                    [c for p in parts for c in p.chunks], type=parts[0].type
                ).combine_chunks()
                counts[key] = np.array([v[0] if v else -1 for v in values.to_pylist()])
    else:
        path = ds.root / LEGACY_EPISODES_STATS_PATH
        if not path.is_file():
            return []
        by_ep = {int(r["episode_index"]): r.get("stats", {}) for r in _read_jsonl(path)}
        for key in tabular:
            vals = []
            for e in ds.episodes["episode_index"]:
                st = by_ep.get(int(e), {}).get(key)
                if st is None or "count" not in st:
                    break
                vals.append(int(np.asarray(st["count"]).reshape(-1)[0]))
            else:
                counts[key] = np.array(vals)
    problems = []
    for key, c in counts.items():
        if len(c) == len(lengths) and not np.array_equal(c, lengths):
            i = int(np.flatnonzero(c != lengths)[0])
            problems.append(
                f"per-episode stats of {key!r}: episode {int(ds.episodes['episode_index'].iloc[i])}"
                f" has count {int(c[i])} but length {int(lengths[i])}"
            )
            if len(problems) >= _MAX_REPORTED:
                break
    return problems


def _check_video_lengths(ds: LeRobotDataset, pool: ThreadPoolExecutor) -> list[str]:
    keys = [k for k, ft in ds.features.items() if ft.get("dtype") == "video"]
    pattern = ds.info.get("video_path")
    if not keys or not pattern:
        return []
    try:
        import av  # noqa: F401
    except ImportError:
        logger.warning(
            "PyAV is not installed: video durations not checked (pip install 'rlkit[video]')"
        )
        return []
    eps = ds.episodes
    need: dict[Path, float] = {}  # file -> latest last-frame timestamp it must contain
    where: dict[Path, str] = {}
    for key in keys:
        if ds.version == "v3.0":
            cols = [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "to_timestamp")]
            if not set(cols) <= set(eps.columns):
                continue  # reported by LeRobotDataset.validate
            for c, f, to_ts, e in zip(*(eps[c] for c in cols), eps["episode_index"], strict=True):
                p = ds.root / pattern.format(video_key=key, chunk_index=int(c), file_index=int(f))
                last = float(to_ts) - 1.0 / ds.fps
                if last > need.get(p, -1.0):
                    need[p], where[p] = last, f"{key} episode {int(e)}"
        else:
            cs = int(ds.info.get("chunks_size", 1000))
            for e, n in zip(eps["episode_index"], eps["length"], strict=True):
                p = ds.root / pattern.format(
                    episode_chunk=int(e) // cs, video_key=key, episode_index=int(e)
                )
                need[p], where[p] = (int(n) - 1) / ds.fps, f"{key} episode {int(e)}"
    paths = [p for p in need if p.is_file()]  # missing files: reported by validate()

    def probe(p: Path) -> float | str:
        try:
            return video_duration_s(p)
        except LeRobotFormatError as e:
            return str(e)

    problems = []
    for p, dur in zip(paths, pool.map(probe, paths), strict=True):
        if isinstance(dur, str):
            problems.append(dur)
        elif need[p] >= dur + _TS_TOL_S:
            problems.append(
                f"video {p} lasts {dur:.3f}s but {where[p]} needs a frame at {need[p]:.3f}s; "
                "the video is too short for its episode metadata"
            )
        if len(problems) >= _MAX_REPORTED:
            break
    return problems


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
        ds = open_dataset(root)
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
            checks.submit(ds.validate),
            checks.submit(_check_schemas, ds, pool),
            checks.submit(_check_episode_tasks, ds) if files_ok else None,
            checks.submit(_check_episode_counts, ds),
            checks.submit(_check_video_lengths, ds, pool),
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
