"""Parallel expert demonstrations -> a LeRobot v3.0 dataset.

Episodes are split into chunks; a ``multiprocessing.Pool`` runs the chunks with
``imap_unordered`` and each worker steps its whole chunk as one batch of cars
(:class:`~rlkit.envs.sim.RacingSim`), computes the per-episode stats of its frames and hands
the arrays back through shared memory (:mod:`rlkit.shm_pool`). Episode ``k`` is seeded from
``(run seed, k)`` only, and cars in a batch never influence each other, so the dataset is
byte-for-byte the same for any ``--workers`` and chunking.

Recorded per frame: ``observation.state`` (the env observation before the action),
``action`` (the clean expert action; with ``--noise`` the *executed* action is perturbed,
so the data shows how the expert recovers), ``next.reward``, ``next.done``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rlkit.cluster import ClusterInfo, check_executor, map_ordered, ray_session
from rlkit.config import run_config_files
from rlkit.config.fields import check_fields, opt
from rlkit.envs.expert import Expert
from rlkit.envs.sim import RacingConfig
from rlkit.lerobot.env_meta import ENV_META_PATH, env_meta_text
from rlkit.lerobot.stats import episode_stats_arrays
from rlkit.lerobot.video import check_vcodec, encode_episode, image_episode_stats
from rlkit.progress import progress as make_progress
from rlkit.rollout import ACTION_KEY, CAMERA_KEYS, OBS_KEY, expert_driver, rollout
from rlkit.rundir import check_replaceable, clean_stale_temps, say
from rlkit.shm_pool import WorkerDied, map_unordered
from rlkit.tools import TOOLS
from rlkit.utils import RESULT_FILE, WORKER_RULES, default_workers, write_json_atomic

__all__ = ["CollectConfig", "CollectError", "CollectResult", "collect"]

logger = logging.getLogger(__name__)

TASK = "drive laps of the track as fast as possible without leaving it"


#: the default camera's LeRobot feature, and the episodes per task when recording a camera
#: (a chunk holds its frames until it is encoded: 8 cars x 1000 frames of 96 x 96 are 221 MB)
CAMERA_KEY = CAMERA_KEYS["top"]
CAMERA_CHUNK = 8


@dataclass
class CollectConfig:
    """Options of ``collect_demonstrations.py`` (section ``collect`` of config.yml)."""

    episodes: int = opt(
        100,
        "number of demonstration episodes",
        bounds="[1, 1e7]",
        why="the frames are held in memory until the dataset is written; collect in parts and "
        "merge them",
    )
    workers: int | None = opt(
        None,
        f"worker processes (default: {WORKER_RULES['collect'][0]}; 1 = in-process)",
        bounds="[1, 256]",
        why="one process each",
    )
    seed: int = opt(0, "run seed; episode k uses a seed derived from (seed, k)", bounds="[0, 2^32)")
    output: str = opt("data/demos", "output LeRobot dataset folder")
    noise: float = opt(
        0.1,
        "std of Gaussian noise on the executed action (the clean action is recorded)",
        bounds="[0, 10]",
        why="std of the noise on actions clipped to [-1, 1]",
    )
    max_steps: int = opt(
        1000,
        "steps per episode (0.05 s each) before truncation",
        bounds="[1, 100000]",
        why="5000 s of driving; each worker buffers max_steps frames per car",
    )
    overwrite: bool = opt(False, "replace an existing output dataset")
    chunk_size: int | None = opt(
        None,
        "episodes per worker task, stepped as one batch of cars (default: balanced)",
        bounds="[1, 4096]",
    )
    n_rays: int = opt(11, "range-sensor rays in the observation", bounds="[1, 1024]")
    preview: list[float] = opt(
        list(RacingConfig.preview),
        "distances ahead (m), increasing, at which the observation shows the track "
        "curvature (a denser look ahead: 5 10 15 20 25 30 35 40 50 60, docs/rl.md)",
        bounds="[0, 1000]",
        why="metres ahead, increasing, at most 64 of them",
    )
    camera: int | None = opt(
        None,
        "also record a camera, SIZE x SIZE pixels (e.g. 96), as the LeRobot video "
        "feature observation.images.<--camera-view> (needs pip install 'rlkit[video]'); "
        "off by default",
        bounds="[8, 1024]",
        why="a size in pixels, e.g. 96",
    )
    camera_view: Literal["top", "ego"] = opt(
        "top",
        "--camera: top (the whole track from above) or ego (from above and behind "
        "the car, heading up, 48 m across: the road ahead in the same place on every track)",
    )
    vcodec: Literal["libsvtav1", "h264"] = opt(
        "libsvtav1", "--camera: video codec (libsvtav1: AV1 as LeRobot encodes; h264)"
    )
    executor: Literal["local", "ray"] = opt(
        "local",
        "local: a process pool on this machine; ray: each chunk is a Ray task on "
        "the cluster (--ray-address), the same dataset byte for byte (pip install "
        "'rlkit[ray]')",
    )
    ray_address: str | None = opt(
        None,
        "--executor ray: the cluster to join (host:port, or auto); default "
        "RAY_ADDRESS, else a Ray instance on this machine (--workers CPUs)",
    )

    def __post_init__(self) -> None:
        # Checked before any work: --episodes 1e20 once grew the episode list to 5 GB before
        # anything was written, and --noise nan silently drove with NaN actions.
        check_fields(self)
        if not 1 <= len(self.preview) <= 64 or list(self.preview) != sorted(set(self.preview)):
            raise ValueError(
                "preview must be 1 to 64 increasing distances in metres (e.g. 5 15 30 50), "
                f"got {self.preview}"
            )
        if not str(self.output).strip():
            raise ValueError("output must name a dataset folder, got ''; pass --output DIR")
        check_executor(self.executor)
        if self.camera is not None:
            check_vcodec(self.vcodec)

    @property
    def num_workers(self) -> int:
        return default_workers("collect") if self.workers is None else self.workers

    def env_config(self) -> RacingConfig:
        return RacingConfig(
            n_rays=self.n_rays, preview=tuple(self.preview), max_episode_steps=self.max_steps
        )


class CollectError(RuntimeError):
    """A worker failed; the message carries the worker's traceback."""


@dataclass
class CollectResult:
    """What a collection run produced and how fast."""

    output: Path
    episodes: int
    frames: int
    wall_s: float
    mean_return: float
    lap_rate: float  # fraction of episodes that completed at least one lap
    crash_rate: float  # fraction of episodes that left the track
    mean_first_lap_s: float  # NaN if no episode completed a lap
    workers: int  # worker processes, or the cluster's CPUs
    cluster: dict[str, Any] | None = None  # --executor ray: ClusterInfo

    @property
    def episodes_per_s(self) -> float:
        return self.episodes / self.wall_s

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "output"}
        d["output"] = str(self.output)
        d["episodes_per_s"] = self.episodes_per_s
        return d


def _run_chunk(
    indices: list[int],
    seed: int,
    noise: float,
    env_config: RacingConfig,
    expert: Expert,
    camera: tuple[int, str, str] | None = None,
) -> dict[str, Any]:
    """Drive the episodes ``indices`` as one batch of cars (:func:`~rlkit.rollout.rollout`).

    Returns a dict with ``indices``; ``lengths`` (n,); ``frames``: ``observation.state``,
    ``action``, ``next.reward`` and ``next.done``, episodes concatenated in ``indices``
    order; ``stats``: their per-episode LeRobot stats (computed here, in the worker, rather
    than serially by the writer); ``summary``:
    per-episode ``return`` (float64 sum of the recorded float32 rewards, as a reader of the
    dataset sums them), ``laps``, ``first_lap_time`` (seconds or NaN) and ``terminated``.
    """
    run = rollout(
        expert_driver(expert),
        env_config,
        seed,
        indices,
        "demo",
        noise=noise,
        record_steps=True,
        render_size=camera[0] if camera else None,
        render_view=camera[2] if camera else "top",
    )
    # Time-major (T, n, ...) -> episodes one after another: one boolean gather per column.
    bounds = np.concatenate([[0], np.cumsum(run.length)])
    done = np.zeros(int(bounds[-1]), dtype=bool)
    done[bounds[1:] - 1] = True
    frames = {
        OBS_KEY: run.by_episode(run.obs),
        ACTION_KEY: run.by_episode(run.action),
        "next.reward": run.by_episode(run.reward),
        "next.done": done,
    }
    videos = {CAMERA_KEYS[camera[2]]: _encode_camera(run, camera, env_config)} if camera else {}
    return {
        "indices": list(indices),
        "lengths": run.length,
        "frames": frames,
        "videos": videos,
        "stats": {k: episode_stats_arrays(v, bounds) for k, v in frames.items()},
        "summary": {
            "return": np.add.reduceat(frames["next.reward"].astype(np.float64), bounds[:-1]),
            "laps": run.laps,
            "first_lap_time": run.first_lap_time,
            "terminated": run.terminated,
        },
    }


def _encode_camera(run: Any, camera: tuple[int, str, str], env_config: RacingConfig) -> dict:
    """Each car's frames (the view before each action) as one mp4, in the worker: the mp4s
    concatenated (``data``, uint8) with their ``offsets``, and their image ``stats``."""
    fps = round(1.0 / env_config.dt)
    mp4s, stats = [], []
    for k in range(len(run.length)):
        frames = np.stack(run.frames[k][: run.length[k]])
        run.frames[k] = []  # freed as it goes
        mp4s.append(encode_episode(frames, fps, camera[1]))
        stats.append(image_episode_stats(frames))
    return {
        "data": np.frombuffer(b"".join(mp4s), dtype=np.uint8),
        "offsets": np.cumsum([0] + [len(m) for m in mp4s]).astype(np.int64),
        "stats": {st: np.stack([x[st] for x in stats]) for st in stats[0]},
    }


def _videos_of(chunk: dict[str, Any]) -> dict[str, tuple[list[bytes], dict[str, np.ndarray]]]:
    """A chunk's videos as :meth:`DatasetWriter.add` takes them."""
    out = {}
    for key, v in chunk.get("videos", {}).items():  # an empty tree is not sent back
        data, off = v["data"], v["offsets"]
        out[key] = ([data[off[i] : off[i + 1]].tobytes() for i in range(len(off) - 1)], v["stats"])
    return out


def _chunks(n_episodes: int, workers: int, chunk_size: int | None) -> list[list[int]]:
    """Episode index chunks of at most 256 cars (one batch each), ~2 per worker.

    Measured on 2 cores (ms per car-episode of 1000 steps): 64 cars 12.5, 128 10.9, 167 9.9,
    256 9.0, 500 8.6; so one process runs the fewest, largest batches, and several workers take
    ~2 chunks each: enough to balance the load (crashed episodes end early) and to stream the
    first chunks into the dataset while the last ones are driven. Shrinking the last chunks
    (guided scheduling) cost more in small batches than it saved at the end.
    """
    if chunk_size is None:
        per_worker = 1 if workers == 1 else 2  # one process needs no balancing
        chunk_size = min(256, max(1, math.ceil(n_episodes / (per_worker * workers))))
    return [
        list(range(i, min(i + chunk_size, n_episodes))) for i in range(0, n_episodes, chunk_size)
    ]


def _check_output(path: Path, overwrite: bool) -> None:
    """Fail before any work if the output cannot be written.

    With ``--overwrite`` only a LeRobot dataset (or an rlkit run's files) is replaced: a
    regular file, or a folder holding anything else (notes.txt, sub/...), is refused.
    """
    # (rlkit.lerobot.meta.check_output without importing pyarrow here; the writer checks
    # again when it publishes)
    if path.exists() or path.is_symlink():
        check_replaceable(path, "dataset", flag="--output")
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite or choose another --output")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(
            f"cannot write --output {path}: {parent} is a file; choose another --output"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cannot write --output {path}: {parent} is not writable; choose another --output"
        )


def collect(
    cfg: CollectConfig,
    *,
    env_config: RacingConfig | None = None,
    expert: Expert | None = None,
    argv: list[str] | None = None,
    progress: bool = True,
) -> CollectResult:
    """Record ``cfg.episodes`` expert episodes in parallel and write the dataset.

    Args:
        cfg: collection options.
        env_config: task definition (default: from ``cfg``: rays, max steps).
        expert: the driver (default :class:`Expert`).
        argv: the command-line arguments, saved as ``command.txt`` in the dataset.
        progress: show progress (a tqdm bar on a terminal, lines otherwise).

    Raises:
        FileExistsError / PermissionError: the output cannot be written (checked first).
        CollectError: a worker raised; its traceback is in the message.
    """
    t0 = time.perf_counter()
    out = Path(cfg.output)
    _check_output(out, cfg.overwrite)
    # a killed collection's .NAME.tmp-PID (as big as the dataset): free the disk first
    for p in clean_stale_temps(out.parent, prefix=f"{out.name}.", recursive=False):
        say(f"removed {p}, left by a killed process")
    # The writer needs pandas/pyarrow (~0.4 s to import): load them in the background while
    # the episodes are driven, not serially after. Workers never import them.
    threading.Thread(
        target=importlib.import_module, args=("rlkit.lerobot.writer",), daemon=True
    ).start()
    env_config = env_config or cfg.env_config()
    expert = expert or Expert()
    with contextlib.ExitStack() as stack:
        cluster = None
        if cfg.executor == "ray":
            cluster = stack.enter_context(ray_session(cfg.ray_address, cfg.workers))
            say(f"{TOOLS['collect'].script}: {cluster.describe()}")
        return _record(cfg, env_config, expert, cluster, argv, progress, t0)


def _record(
    cfg: CollectConfig,
    env_config: RacingConfig,
    expert: Expert,
    cluster: ClusterInfo | None,
    argv: list[str] | None,
    progress: bool,
    t0: float,
) -> CollectResult:
    """Drive the chunks (a pool, or Ray tasks on ``cluster``) and stream them to the writer."""
    out = Path(cfg.output)
    workers = cluster.cpus if cluster else cfg.num_workers
    camera = (cfg.camera, cfg.vcodec, cfg.camera_view) if cfg.camera else None
    chunk_size = cfg.chunk_size or (CAMERA_CHUNK if camera else None)
    tasks = [
        (c, cfg.seed, cfg.noise, env_config, expert, camera)
        for c in _chunks(cfg.episodes, workers, chunk_size)
    ]
    # Chunks arrive in any order; each one that extends the written prefix of episodes goes
    # to the dataset writer at once, so the parquet encoding overlaps the driving.
    pending: dict[int, dict[str, Any]] = {}  # first episode index -> chunk
    written: list[dict[str, Any]] = []
    next_ep = 0  # episodes [0, next_ep) are in the writer
    writer = None
    bar = make_progress(cfg.episodes, "collect", "ep", enabled=progress)
    driven = _drive_ray(tasks, workers) if cluster else _drive(tasks, workers)
    try:
        for chunk in driven:
            bar.update(len(chunk["indices"]))
            pending[chunk["indices"][0]] = chunk
            while next_ep in pending:
                if writer is None:
                    writer = _dataset_writer(cfg, env_config)
                chunk = pending.pop(next_ep)
                frames = dict(chunk["frames"])
                frames["episode_index"] = np.repeat(
                    np.asarray(chunk["indices"], dtype=np.int64), chunk["lengths"]
                )
                writer.add(frames, chunk["stats"], _videos_of(chunk))
                del chunk["frames"], chunk["stats"]  # the writer holds them now
                chunk.pop("videos", None)
                written.append(chunk)
                next_ep += len(chunk["indices"])
        bar.close()
        t_drive = time.perf_counter() - t0
        assert writer is not None and not pending
        extra = run_config_files(cfg, section="collect", argv=argv)
        extra[ENV_META_PATH] = env_meta_text(env_config)
        writer.close(extra)
    except BaseException:
        bar.close()
        driven.close()  # stops the pool now, not when the generator is collected
        if writer is not None:
            writer.abort()
        raise

    result = _summarize(cfg, written, workers, cluster, t0)
    write_json_atomic(out / RESULT_FILE, result.to_dict())
    logger.info(
        "collected %d episodes (%d frames) in %.2fs: %.2fs driving and streaming, "
        "%.2fs finishing the dataset",
        result.episodes,
        result.frames,
        result.wall_s,
        t_drive,
        result.wall_s - t_drive,
    )
    return result


def _summarize(
    cfg: CollectConfig,
    chunks: list[dict[str, Any]],
    workers: int,
    cluster: ClusterInfo | None,
    t0: float,
) -> CollectResult:
    """The run's result from its chunks' per-episode summaries."""
    lengths = np.concatenate([c["lengths"] for c in chunks])
    summary = {k: np.concatenate([c["summary"][k] for c in chunks]) for k in chunks[0]["summary"]}
    first_laps = summary["first_lap_time"]
    laps_ok = ~np.isnan(first_laps)
    return CollectResult(
        output=Path(cfg.output),
        episodes=cfg.episodes,
        frames=int(lengths.sum()),
        wall_s=time.perf_counter() - t0,
        mean_return=float(summary["return"].mean()),
        lap_rate=float(laps_ok.mean()),
        crash_rate=float(summary["terminated"].mean()),
        mean_first_lap_s=float(first_laps[laps_ok].mean()) if laps_ok.any() else math.nan,
        workers=workers,
        cluster=dataclasses.asdict(cluster) if cluster else None,
    )


def _drive(tasks: list[tuple[Any, ...]], workers: int):
    """Yield driven chunks as they finish: in this process for one worker, else from a pool
    whose results come back through shared memory (:mod:`rlkit.shm_pool`).

    Raises:
        CollectError: a worker raised (its traceback is in the message) or died.
    """
    try:
        yield from map_unordered(
            _run_chunk, tasks, workers, f"rlkit_collect_{os.getpid()}_", preload="rlkit.collect"
        )
    except WorkerDied as e:
        raise CollectError(f"{e}; try fewer --workers") from None
    except Exception as e:
        remote = getattr(e, "__cause__", None)
        detail = f"\n{remote}" if remote is not None else ""
        raise CollectError(f"a collection worker failed: {type(e).__name__}: {e}{detail}") from e


def _drive_ray(tasks: list[tuple[Any, ...]], cpus: int):
    """:func:`_drive` on a Ray cluster: each chunk a task, two per CPU in flight, the
    results in episode order (the driver holds one chunk at a time; the others wait in the
    object store of the node that drove them).

    Raises:
        CollectError: a task raised (its traceback is in the message) or failed its retries.
    """
    from ray.exceptions import RayError

    try:
        yield from map_ordered(_run_chunk, tasks, window=2 * max(1, cpus))
    except RayError as e:
        raise CollectError(f"a collection task failed on the Ray cluster: {e}") from e


def _dataset_writer(cfg: CollectConfig, env_config: RacingConfig):
    from rlkit.lerobot.writer import DatasetWriter  # waits for the background import

    return DatasetWriter(
        cfg.output,
        fps=round(1.0 / env_config.dt),
        tasks=[TASK],
        feature_names={OBS_KEY: env_config.obs_names, ACTION_KEY: ["steer", "throttle"]},
        robot_type="rlkit_racing_car",
        overwrite=cfg.overwrite,
    )
