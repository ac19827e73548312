"""Copy the sources' rows into the merged dataset: consecutive episodes of one source file
become a piece, pieces become thread-pool jobs of ~``JOB_ROWS`` rows; a job reads its rows,
re-indexes them (new ``episode_index`` / ``index``, remapped ``task_index``), zero-pads vector
columns and computes the per-episode stats, and the parent writes the results in order (v3.0:
one row group per episode; v2.1: the job writes its one-episode files). Videos are
hard-linked (or copied), never re-encoded."""

from __future__ import annotations

import os
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlkit.lerobot.files import column_to_numpy, nonfinite_rows, parquet_errors
from rlkit.lerobot.layout import DataFileWriter, LeRobotFormatError, is_float
from rlkit.lerobot.merge.features import Feature
from rlkit.lerobot.merge.plan import Plan, Source
from rlkit.lerobot.stats import episode_stats_arrays
from rlkit.progress import progress as make_progress

T = TypeVar("T")
R = TypeVar("R")

MAX_PIECE_ROWS = 262_144  # rows of one source file read at once
JOB_ROWS = 65_536  # rows converted, summarised and handed to the writer as one job


def copy_data(
    plan: Plan,
    out_root: Path,
    keep_columns: set[str],
    pool: ThreadPoolExecutor,
    window: int,
    progress: bool,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[np.ndarray]]]:
    """Convert and write every output row, at most ``window`` jobs in flight.

    Returns:
        The per-episode stats of the tabular features (stat -> ``(E, ...)``), and the values
        of the columns ``keep_columns`` (for stats recomputed from the merged data).
    """
    tabular = [k for k, f in plan.features.items() if f.tabular]
    ep_parts: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in tabular}
    col_parts: dict[str, list[np.ndarray]] = {k: [] for k in keep_columns}
    n_frames = int(plan.lengths.sum())
    # first: a bad RLKIT_PROGRESS_SECONDS raises before a file is open
    bar = make_progress(n_frames, "merge", "frame", enabled=progress, unit_scale=True)
    data = DataFileWriter(out_root, plan.layout, plan.schema)
    load = _Loader(plan, keep_columns, out_root)
    try:
        for _, res in _ordered_map(pool, load, _jobs(_pieces(plan)), window):
            if res.table is not None:
                offset = 0
                for n in res.lengths.tolist():  # one row group per episode
                    data.write(res.table.slice(offset, n), res.out_file)
                    offset += n
            for k, st in res.ep_stats.items():
                ep_parts[k].append(st)
            for k, v in res.columns.items():
                col_parts[k].append(v)
            bar.update(res.rows)
    finally:
        bar.close()
        data.close()
    ep_stats = {
        k: {stat: np.concatenate([p[stat] for p in parts]) for stat in parts[0]}
        for k, parts in ep_parts.items()
    }
    return ep_stats, col_parts


@dataclass
class Piece:
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
class PieceResult:
    table: pa.Table | None  # v3.0: the job's output rows; v2.1: None (written by the job)
    ep_stats: dict[str, dict[str, np.ndarray]]
    columns: dict[str, np.ndarray]
    lengths: np.ndarray
    out_file: tuple[int, int]
    rows: int


def _pieces(plan: Plan) -> list[Piece]:
    """Group consecutive merged episodes that are adjacent rows of one source file."""
    pieces: list[Piece] = []
    out_file = plan.out_file
    bounds = plan.bounds
    cur: list[int] = []

    def flush() -> None:
        if not cur:
            return
        e0 = cur[0]
        s = plan.sources[int(plan.out_src[e0])]
        rows = plan.out_row[cur]
        pieces.append(
            Piece(
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
                and n_rows + plan.lengths[e] <= MAX_PIECE_ROWS
            )
            if not same:
                flush()
                n_rows = 0
        cur.append(e)
        n_rows += int(plan.lengths[e])
    flush()
    return pieces


def _jobs(pieces: list[Piece]) -> list[list[Piece]]:
    """Batch consecutive pieces (same output file) into thread-pool jobs of ~JOB_ROWS rows.

    Per-episode stats then run once per job: a few numpy calls over many small episodes
    instead of a few per episode (v2.x sources are one small file per episode).
    """
    jobs: list[list[Piece]] = []
    rows = 0
    for p in pieces:
        if jobs and jobs[-1][-1].out_file == p.out_file and rows + p.rows <= JOB_ROWS:
            jobs[-1].append(p)
            rows += p.rows
        else:
            jobs.append([p])
            rows = p.rows
    return jobs


class _Loader:
    """Reads, converts and summarises one job (consecutive pieces); runs in a pool thread."""

    def __init__(self, plan: Plan, keep_columns: set[str], out_root: Path) -> None:
        self.plan, self.keep_columns, self.out_root = plan, keep_columns, out_root
        self.tabular = [k for k, f in plan.features.items() if f.tabular]
        self.layout = plan.layout

    def __call__(self, job: list[Piece]) -> PieceResult:
        parts = [self._convert(p) for p in job]
        table = pa.concat_tables([t for t, _ in parts]) if len(parts) > 1 else parts[0][0]
        values = {
            k: np.concatenate([v[k] for _, v in parts]) if len(parts) > 1 else parts[0][1][k]
            for k in self.tabular
        }
        lengths = np.concatenate([p.lengths for p in job])
        local = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ep_stats = {k: episode_stats_arrays(values[k], local) for k in self.tabular}
        out: pa.Table | None = table
        if self.plan.version == "v2.1":  # one file per episode, written here in the pool
            data = DataFileWriter(self.out_root, self.layout, self.plan.schema)
            try:
                out_eps = np.concatenate([p.out_eps for p in job])
                for j, ep in enumerate(out_eps.tolist()):
                    data.write(table.slice(int(local[j]), int(lengths[j])), ep)
            finally:
                data.close()
            out = None
        kept = {k: values[k] for k in self.keep_columns}
        return PieceResult(out, ep_stats, kept, lengths, job[0].out_file, int(local[-1]))

    def _convert(self, piece: Piece) -> tuple[pa.Table, dict[str, np.ndarray]]:
        """Read one piece and turn it into output rows; numpy values of tabular columns."""
        s = self.plan.sources[piece.src]
        path = s.files[piece.file]
        table = _read_rows(path, piece.lo, piece.rows)
        values = _index_values(piece, s, table, path)
        columns: list[pa.ChunkedArray] = []
        for key, ft in self.plan.features.items():
            if ft.kind == "video":
                continue
            if key in values:
                col: Any = pa.array(values[key].astype(ft.spec["dtype"], copy=False))
            else:
                src_dim = ft.dims[piece.src] if ft.kind == "vector" else 1
                col, arr = _convert(table.column(key), ft, src_dim, path)
                if arr is not None:
                    values[key] = arr
                if is_float(ft.spec):
                    _check_finite(arr if arr is not None else col, ft, path, piece.lo)
            columns.append(col if isinstance(col, pa.ChunkedArray) else pa.chunked_array([col]))
        return pa.Table.from_arrays(columns, schema=self.plan.schema), values


def _index_values(piece: Piece, s: Source, table: pa.Table, path: Path) -> dict[str, np.ndarray]:
    """The piece's new ``episode_index``, ``index`` and remapped ``task_index`` (``frame_index``
    and ``timestamp`` are kept), after checking the source's against its metadata."""
    src_ep = column_to_numpy(table.column("episode_index"), "episode_index", path)
    expected = np.repeat(s.ep_index[piece.src_eps], piece.lengths)
    if not np.array_equal(src_ep, expected):
        row = int(np.flatnonzero(src_ep != expected)[0])
        raise LeRobotFormatError(
            f"{path}: row {piece.lo + row} has episode_index {src_ep[row]} but the episode "
            f"metadata of {s.name} places episode {expected[row]} there; the data and "
            "episode table disagree"
        )
    src_task = column_to_numpy(table.column("task_index"), "task_index", path)
    bad = (src_task < 0) | (src_task >= len(s.task_map))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LeRobotFormatError(
            f"{path}: row {piece.lo + row} has task_index {src_task[row]}, not in "
            f"{s.name}'s tasks table (0..{len(s.task_map) - 1}); fix the tasks file"
        )
    return {
        "episode_index": np.repeat(piece.out_eps, piece.lengths),
        "index": np.arange(piece.out_start, piece.out_start + piece.rows, dtype=np.int64),
        "task_index": s.task_map[src_task],
    }


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
    col: pa.ChunkedArray, ft: Feature, src_dim: int, path: Path
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
    arr = column_to_numpy(col, ft.key, path)
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


def _check_finite(
    values: np.ndarray | pa.ChunkedArray | pa.Array, ft: Feature, path: Path, lo: int
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


def copy_videos(
    plan: Plan, tmp: Path, copy: bool, pool: ThreadPoolExecutor
) -> tuple[dict[str, dict[str, np.ndarray]], int, int]:
    """Carry every needed mp4 into ``tmp`` (never re-encoded); return the v3.0 ``videos/*``
    episode columns, and how many files were hard-linked and copied."""
    layout = plan.layout
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
            if plan.version == "v2.1":
                jobs.append((src, tmp / layout.video_file(e, key)))
                continue
            if src not in assigned:
                n = len(assigned)
                assigned[src] = (n // plan.chunks_size, n % plan.chunks_size)
                c, f = assigned[src]
                jobs.append((src, tmp / layout.video_file((c, f), key)))
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
