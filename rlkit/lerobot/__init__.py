"""LeRobot dataset I/O: read v2.0/v2.1/v3.0, write v3.0, and compute/pool statistics."""

from rlkit.lerobot.reader import LeRobotDataset, LeRobotFormatError, open_dataset
from rlkit.lerobot.stats import aggregate_stats, compute_episode_stats, compute_stats
from rlkit.lerobot.writer import write_dataset

__all__ = [
    "LeRobotDataset",
    "LeRobotFormatError",
    "aggregate_stats",
    "compute_episode_stats",
    "compute_stats",
    "open_dataset",
    "write_dataset",
]
