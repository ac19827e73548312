"""LeRobot dataset I/O: read v2.0/v2.1/v3.0, write v3.0, validate, and compute/pool statistics.

One module per concern: ``layout`` (paths, defaults, feature types), ``reader``
(:class:`DatasetReader`: metadata and columns; not lerobot's torch ``LeRobotDataset``),
``writer`` (:class:`DatasetWriter`), ``meta`` (the metadata writer the writer and the merger
share), ``stats``, ``validate`` and ``merge``.

The names below load on first use (PEP 562): ``rlkit.lerobot.stats`` needs only numpy, so
collection workers import it without paying for pyarrow and pandas (~0.4 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlkit.lerobot.layout import LeRobotFormatError
    from rlkit.lerobot.reader import DatasetReader
    from rlkit.lerobot.stats import aggregate_stats, compute_stats
    from rlkit.lerobot.validate import validate_dataset
    from rlkit.lerobot.writer import DatasetWriter, write_dataset

_WHERE = {
    "DatasetReader": "reader",
    "DatasetWriter": "writer",
    "LeRobotFormatError": "layout",
    "aggregate_stats": "stats",
    "compute_stats": "stats",
    "validate_dataset": "validate",
    "write_dataset": "writer",
}

__all__ = [
    "DatasetReader",
    "DatasetWriter",
    "LeRobotFormatError",
    "aggregate_stats",
    "compute_stats",
    "validate_dataset",
    "write_dataset",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
