"""Options and result of ``merge_lerobot_dataset.py`` (section ``merge`` of config.yml), and
the summary it prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rlkit.config.fields import check_fields, opt
from rlkit.lerobot.layout import DEFAULT_CHUNKS_SIZE, DEFAULT_DATA_FILES_SIZE_IN_MB

#: Threads at most for file work (--workers).
MAX_WORKERS = 256


@dataclass
class MergeConfig:
    """Options of ``merge_lerobot_dataset.py`` (section ``merge`` of config.yml)."""

    sources: list[str] = opt(
        [], "source dataset folders (v2.0/v2.1/v3.0, mixed), merged in this order"
    )
    output: str = opt("data/merged", "output dataset folder")
    output_version: Literal["v3.0", "v2.1"] = opt("v3.0", "codebase version of the output")
    pad_to: int | None = opt(
        None,
        "zero-pad every vector feature to this dim (default: pad only features whose "
        "dims differ, to the largest)",
        bounds="[1, 65536]",
        why="columns of a padded vector feature, stored for every frame",
    )
    pad: bool = opt(True, "zero-pad vector dims that differ (--no-pad: make that an error)")
    skip_missing_videos: bool = opt(
        False, "drop episodes whose mp4 files are missing (warned) instead of failing"
    )
    copy: bool = opt(False, "copy video files instead of hard-linking them")
    workers: int | None = opt(
        None, "threads for file work (default: cores, min 2, cap 8)", bounds=f"[1, {MAX_WORKERS}]"
    )
    overwrite: bool = opt(False, "replace an existing output")
    validate: bool = opt(True, "validate the merged output before publishing (--no-validate: skip)")
    stats_max_mb: float = opt(
        1024.0,
        "recompute stats.json from the merged data up to this many MB of numeric "
        "columns; above, pool per-episode stats",
        bounds="[0, 1048576]",
        why="1 TB of merged columns held in memory",
    )
    data_files_size_in_mb: float | None = opt(
        None,
        "v3.0 output: new data file past this size (default: first v3.0 source, "
        f"else {DEFAULT_DATA_FILES_SIZE_IN_MB})",
        bounds="(0, 1048576]",
        why="1 TB",
    )
    chunks_size: int | None = opt(
        None,
        "files (v3.0) or episodes (v2.1) per chunk folder (default: first source, "
        f"else {DEFAULT_CHUNKS_SIZE})",
        bounds="[1, 1e6]",
    )

    def __post_init__(self) -> None:
        # Checked before anything is read or allocated (--pad-to 1e20 reached 24 GB).
        check_fields(self)
        if self.pad_to is not None and not self.pad:
            raise ValueError("--pad-to and --no-pad contradict each other; pass only one of them")


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
