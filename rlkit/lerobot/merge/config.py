"""Options and result of ``merge_lerobot_dataset.py`` (section ``merge`` of config.yml), and
the summary it prints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rlkit.lerobot.layout import DEFAULT_CHUNKS_SIZE, DEFAULT_DATA_FILES_SIZE_IN_MB

# Upper bounds of the options, checked before anything is read or allocated.
MAX_PAD_TO = 65_536  # columns of one padded vector feature (--pad-to 1e20 allocated 24 GB)
MAX_WORKERS = 256
MAX_MB = 1_048_576  # 1 TB
MAX_CHUNKS_SIZE = 1_000_000


@dataclass
class MergeConfig:
    """Options of ``merge_lerobot_dataset.py`` (section ``merge`` of config.yml)."""

    sources: list[str] = field(
        default_factory=list,
        metadata={"help": "source dataset folders (v2.0/v2.1/v3.0, mixed), merged in this order"},
    )
    output: str = field(default="data/merged", metadata={"help": "output dataset folder"})
    output_version: Literal["v3.0", "v2.1"] = field(
        default="v3.0", metadata={"help": "codebase version of the output"}
    )
    pad_to: int | None = field(
        default=None,
        metadata={
            "help": "zero-pad every vector feature to this dim (default: pad only features whose "
            "dims differ, to the largest)"
        },
    )
    pad: bool = field(
        default=True,
        metadata={"help": "zero-pad vector dims that differ (--no-pad: make that an error)"},
    )
    skip_missing_videos: bool = field(
        default=False,
        metadata={"help": "drop episodes whose mp4 files are missing (warned) instead of failing"},
    )
    copy: bool = field(
        default=False, metadata={"help": "copy video files instead of hard-linking them"}
    )
    workers: int | None = field(
        default=None, metadata={"help": "threads for file work (default: cores, min 2, cap 8)"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output"})
    validate: bool = field(
        default=True,
        metadata={"help": "validate the merged output before publishing (--no-validate: skip)"},
    )
    stats_max_mb: float = field(
        default=1024.0,
        metadata={
            "help": "recompute stats.json from the merged data up to this many MB of numeric "
            "columns; above, pool per-episode stats"
        },
    )
    data_files_size_in_mb: float | None = field(
        default=None,
        metadata={
            "help": "v3.0 output: new data file past this size (default: first v3.0 source, "
            f"else {DEFAULT_DATA_FILES_SIZE_IN_MB})"
        },
    )
    chunks_size: int | None = field(
        default=None,
        metadata={
            "help": "files (v3.0) or episodes (v2.1) per chunk folder (default: first source, "
            f"else {DEFAULT_CHUNKS_SIZE})"
        },
    )

    def __post_init__(self) -> None:
        # Bounds checked before anything is read or allocated (--pad-to 1e20 reached 24 GB).
        if self.pad_to is not None and self.pad_to < 1:
            raise ValueError(f"pad_to must be >= 1, got {self.pad_to}")
        if self.pad_to is not None and self.pad_to > MAX_PAD_TO:
            raise ValueError(
                f"pad_to must be <= {MAX_PAD_TO} (columns of a padded vector feature, stored "
                f"for every frame), got {self.pad_to}"
            )
        if self.pad_to is not None and not self.pad:
            raise ValueError("--pad-to and --no-pad contradict each other; pass only one of them")
        if self.workers is not None and self.workers < 1:
            raise ValueError(
                f"workers must be >= 1 (or unset for the core count), got {self.workers}"
            )
        if self.workers is not None and self.workers > MAX_WORKERS:
            raise ValueError(f"workers must be <= {MAX_WORKERS} threads, got {self.workers}")
        if not math.isfinite(self.stats_max_mb):
            raise ValueError(f"stats_max_mb must be a finite number, got {self.stats_max_mb}")
        if self.stats_max_mb < 0:
            raise ValueError(f"stats_max_mb must be >= 0, got {self.stats_max_mb}")
        if self.stats_max_mb > MAX_MB:
            raise ValueError(
                f"stats_max_mb must be <= {MAX_MB} (1 TB of merged columns held in memory), "
                f"got {self.stats_max_mb}"
            )
        size = self.data_files_size_in_mb
        if size is not None and not math.isfinite(size):
            raise ValueError(f"data_files_size_in_mb must be a finite number, got {size}")
        if size is not None and not size > 0:
            raise ValueError(f"data_files_size_in_mb must be > 0, got {size}")
        if size is not None and size > MAX_MB:
            raise ValueError(f"data_files_size_in_mb must be <= {MAX_MB} (1 TB), got {size}")
        if self.chunks_size is not None and self.chunks_size < 1:
            raise ValueError(f"chunks_size must be >= 1, got {self.chunks_size}")
        if self.chunks_size is not None and self.chunks_size > MAX_CHUNKS_SIZE:
            raise ValueError(f"chunks_size must be <= {MAX_CHUNKS_SIZE}, got {self.chunks_size}")


@dataclass
class MergeResult:
    """What :func:`merge` did, for the summary and for tests."""

    output: Path
    version: str
    sources: int
    episodes: int
    frames: int
    tasks: int
    data_files: int
    padded: dict[str, tuple[list[int], int]]  # feature -> (dim in each source, merged dim)
    dropped: list[tuple[str, int]]  # (source folder, source episode_index) left out
    videos_linked: int
    videos_copied: int
    exact_stats: bool
    validated: bool
    wall_s: float
    phases_s: dict[str, float] = field(default_factory=dict)  # plan, data, stats+meta, validate

    @property
    def frames_per_s(self) -> float:
        """Merged frames per second of wall time."""
        return self.frames / max(self.wall_s, 1e-9)


def summary_text(result: MergeResult) -> str:
    """The summary ``merge_lerobot_dataset.py`` prints."""
    lines = [
        f"merged {result.sources} dataset(s) -> {result.output} ({result.version})",
        f"  episodes      {result.episodes}",
        f"  frames        {result.frames}",
        f"  tasks         {result.tasks}",
        f"  data files    {result.data_files}",
    ]
    if result.padded:
        for key, (dims, to) in result.padded.items():
            lines.append(f"  padded        {key}: {dims} -> {to}")
    else:
        lines.append("  padded        none")
    if result.dropped:
        lines.append(f"  dropped       {len(result.dropped)} episode(s) with missing videos")
    if result.videos_linked or result.videos_copied:
        lines.append(
            f"  videos        {result.videos_linked} hard-linked, {result.videos_copied} copied"
        )
    lines.append(
        "  stats         "
        + ("recomputed from the merged data" if result.exact_stats else "pooled per episode")
    )
    lines.append(f"  validated     {'yes' if result.validated else 'skipped (--no-validate)'}")
    phases = ", ".join(f"{k} {v:.2f}" for k, v in result.phases_s.items())
    lines.append(f"  wall time     {result.wall_s:.2f} s ({phases})")
    lines.append(f"  throughput    {result.frames_per_s:,.0f} frames/s")
    return "\n".join(lines)
