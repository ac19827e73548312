"""LeRobot dataset I/O: read v2.0/v2.1/v3.0, write v3.0, and compute/pool statistics.

The names below load on first use (PEP 562): ``rlkit.lerobot.stats`` needs only numpy, so
collection workers import it without paying for pyarrow and pandas (~0.4 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlkit.lerobot.reader import LeRobotDataset, LeRobotFormatError, open_dataset
    from rlkit.lerobot.stats import aggregate_stats, compute_episode_stats, compute_stats
    from rlkit.lerobot.writer import DatasetWriter, write_dataset

_WHERE = {
    "DatasetWriter": "writer",
    "LeRobotDataset": "reader",
    "LeRobotFormatError": "reader",
    "open_dataset": "reader",
    "aggregate_stats": "stats",
    "compute_episode_stats": "stats",
    "compute_stats": "stats",
    "write_dataset": "writer",
}

__all__ = [
    "DatasetWriter",
    "LeRobotDataset",
    "LeRobotFormatError",
    "aggregate_stats",
    "compute_episode_stats",
    "compute_stats",
    "open_dataset",
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
