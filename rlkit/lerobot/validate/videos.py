"""The video checks of :func:`~rlkit.lerobot.validate.validate_dataset`: referenced files
exist, v3.0 timestamp ranges match the episode lengths, every episode's last frame lies
inside its mp4, and its first and last frame decode (PyAV)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from rlkit.lerobot.layout import INFO_PATH, TIMESTAMP_TOL_S, LeRobotFormatError
from rlkit.lerobot.reader import DatasetReader
from rlkit.lerobot.validate.problems import MAX_REPORTED, capped
from rlkit.lerobot.video import video_duration_s

__all__ = ["check_video_lengths", "check_videos", "video_keys"]

logger = logging.getLogger(__name__)


def video_keys(ds: DatasetReader) -> list[str]:
    return [k for k, ft in ds.features.items() if ft.get("dtype") == "video"]


def check_videos(ds: DatasetReader) -> list[str]:
    """Referenced video files exist; v3.0 timestamp ranges match the episode lengths."""
    keys = video_keys(ds)
    if keys and ds.layout.video_path is None:
        return [f"{ds.root / INFO_PATH}: video features {keys} but video_path is null"]
    problems: list[str] = []
    missing: list[str] = []
    eps = ds.episodes
    for key in keys:
        try:
            paths = set(ds.video_files(key))
        except LeRobotFormatError as e:
            problems.append(str(e))
            continue
        missing.extend(str(p) for p in sorted(paths) if not p.is_file())
        ts_cols = [f"videos/{key}/from_timestamp", f"videos/{key}/to_timestamp"]
        if ds.version == "v3.0" and set(ts_cols) <= set(eps.columns):
            dur = eps[ts_cols[1]].to_numpy(float) - eps[ts_cols[0]].to_numpy(float)
            expected = eps["length"].to_numpy(float) / ds.fps
            bad = np.flatnonzero(np.abs(dur - expected) > 0.5 / ds.fps)
            if len(bad):
                i = int(bad[0])
                problems.append(
                    f"video {key!r}: {len(bad)} episodes have to_timestamp - "
                    f"from_timestamp != length/fps, e.g. episode "
                    f"{eps['episode_index'].iloc[i]}: {dur[i]:.4f}s vs {expected[i]:.4f}s"
                )
    missing_lines = [f"video file {p} is referenced but does not exist" for p in missing]
    return problems + capped(missing_lines, "missing video files")


def check_video_lengths(ds: DatasetReader, pool: ThreadPoolExecutor) -> list[str]:
    keys = video_keys(ds)
    if not keys or ds.layout.video_path is None:
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
        to_col = f"videos/{key}/to_timestamp"
        if ds.version == "v3.0" and to_col not in eps.columns:
            continue  # reported by check_videos
        try:
            files = ds.video_files(key)
        except LeRobotFormatError:
            continue  # reported by check_videos
        if ds.version == "v3.0":
            last = eps[to_col].to_numpy(np.float64) - 1.0 / ds.fps
        else:
            last = (eps["length"].to_numpy(np.float64) - 1) / ds.fps
        for p, t, e in zip(files, last.tolist(), eps["episode_index"], strict=True):
            if t > need.get(p, -1.0):
                need[p], where[p] = t, f"{key} episode {int(e)}"
    paths = [p for p in need if p.is_file()]  # missing files: reported by _check_videos

    def probe(p: Path) -> float | str:
        try:
            return video_duration_s(p)
        except LeRobotFormatError as e:
            return str(e)

    problems = []
    for p, dur in zip(paths, pool.map(probe, paths), strict=True):
        if isinstance(dur, str):
            problems.append(dur)
        elif need[p] >= dur + TIMESTAMP_TOL_S:
            problems.append(
                f"video {p} lasts {dur:.3f}s but {where[p]} needs a frame at {need[p]:.3f}s; "
                "the video is too short for its episode metadata"
            )
        if len(problems) >= MAX_REPORTED:
            break
    return problems or _check_first_and_last_frames(ds, keys, pool)


def _check_first_and_last_frames(
    ds: DatasetReader, keys: list[str], pool: ThreadPoolExecutor
) -> list[str]:
    """Decode every episode's first and last frame of each video feature (PyAV)."""
    from rlkit.lerobot.video import decode_frames_at

    eps = ds.episodes
    lengths = eps["length"].to_numpy(np.float64)
    wanted: dict[Path, list[tuple[float, str]]] = {}
    for key in keys:
        try:
            files = ds.video_files(key)
        except LeRobotFormatError:
            continue  # reported by check_videos
        from_col = f"videos/{key}/from_timestamp"
        if ds.version == "v3.0":
            if from_col not in eps.columns:
                continue
            start = eps[from_col].to_numpy(np.float64)
        else:
            start = np.zeros(len(eps))
        last = start + (lengths - 1) / ds.fps
        for p, a, b, e in zip(files, start, last, eps["episode_index"], strict=True):
            if p.is_file():
                what = f"video {key!r} episode {int(e)}"
                wanted.setdefault(p, []).extend([(a, f"{what}: first"), (b, f"{what}: last")])

    def decode(p: Path) -> list[str]:
        times = [t for t, _ in wanted[p]]
        try:
            frames = decode_frames_at(p, times, ds.fps)
        except Exception as e:  # a file PyAV cannot open at all
            return [f"video {p} cannot be decoded ({type(e).__name__}: {e}); re-encode it"]
        return [
            f"{what} frame (at {t:.3f}s) cannot be decoded from {p}"
            for (t, what), f in zip(wanted[p], frames, strict=True)
            if f is None
        ]

    problems = [msg for msgs in pool.map(decode, list(wanted)) for msg in msgs]
    return problems[:MAX_REPORTED]
