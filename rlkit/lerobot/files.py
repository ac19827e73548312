"""Reading the files of a LeRobot dataset: JSON and JSON Lines metadata, parquet columns as
numpy arrays, stats values; every damaged or malformed file becomes one
:class:`~rlkit.lerobot.layout.LeRobotFormatError` naming it (used by the reader, the
validator and the merger)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rlkit.lerobot.layout import LeRobotFormatError

__all__ = [
    "column_to_numpy",
    "nonfinite_rows",
    "parquet_errors",
    "read_json",
    "read_jsonl",
    "stat_array",
]


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
    # NaN and inf carry into a sum: a finite sum means every value is finite (10x cheaper than
    # the row test below, which a sum that overflowed falls through to)
    with np.errstate(over="ignore", invalid="ignore"):
        total = arr.sum()
    if np.isfinite(total):
        return np.zeros(0, dtype=np.int64)
    finite = np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    return np.flatnonzero(~finite)


def stat_array(value: Any, where: str, feat: str, name: str) -> np.ndarray:
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


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LeRobotFormatError(f"{path} is not valid JSON ({e}); re-export the dataset") from e


def read_jsonl(path: Path) -> list[dict[str, Any]]:
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


def column_to_numpy(column: pa.ChunkedArray | pa.Array, key: str, source: Path) -> np.ndarray:
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
            inner = column_to_numpy(flat, key, source)
            return inner.reshape(n, width, *inner.shape[1:])
        return values.reshape(n, width)
    return column.to_numpy(zero_copy_only=False)
