"""Parallel expert demonstrations -> a LeRobot v3.0 dataset.

Episodes are split into chunks; a ``multiprocessing.Pool`` runs the chunks with
``imap_unordered`` and each worker steps its whole chunk as one batch of cars
(:class:`~rlkit.envs.sim.RacingSim`). Episode ``k`` is seeded from ``(run seed, k)`` only, and
cars in a batch never influence each other, so the dataset is byte-for-byte the same for
any ``--workers`` and chunking.

Recorded per frame: ``observation.state`` (the env observation before the action),
``action`` (the clean expert action; with ``--noise`` the *executed* action is perturbed,
so the data shows how the expert recovers), ``next.reward``, ``next.done``.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from tqdm.auto import tqdm

from rlkit.config import run_config_files
from rlkit.envs.expert import Expert
from rlkit.envs.sim import RacingConfig, RacingSim
from rlkit.utils import RESULT_FILE, default_workers, episode_seed, write_json_atomic

__all__ = ["CollectConfig", "CollectError", "CollectResult", "collect", "run_episodes"]

logger = logging.getLogger(__name__)

TASK = "drive laps of the track as fast as possible without leaving it"
ENV_META = "meta/rlkit_env.json"  # the RacingConfig the data was recorded with


@dataclass
class CollectConfig:
    """Options of ``collect_demonstrations.py`` (section ``collect`` of config.yml)."""

    episodes: int = field(default=100, metadata={"help": "number of demonstration episodes"})
    workers: int | None = field(
        default=None,
        metadata={"help": "worker processes (default: cores - 1, min 1, cap 12; 1 = in-process)"},
    )
    seed: int = field(
        default=0, metadata={"help": "run seed; episode k uses a seed derived from (seed, k)"}
    )
    output: str = field(default="data/demos", metadata={"help": "output LeRobot dataset folder"})
    noise: float = field(
        default=0.1,
        metadata={
            "help": "std of Gaussian noise on the executed action (the clean action is recorded)"
        },
    )
    max_steps: int = field(
        default=1000, metadata={"help": "steps per episode (0.05 s each) before truncation"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output dataset"})
    chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "episodes per worker task, stepped as one batch of cars (default: balanced)"
        },
    )
    n_rays: int = field(default=11, metadata={"help": "range-sensor rays in the observation"})

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1 (or unset for cores - 1), got {self.workers}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.n_rays < 1:
            raise ValueError(f"n_rays must be >= 1, got {self.n_rays}")

    @property
    def num_workers(self) -> int:
        return default_workers("collect") if self.workers is None else self.workers

    def env_config(self) -> RacingConfig:
        return RacingConfig(n_rays=self.n_rays, max_episode_steps=self.max_steps)


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
    workers: int

    @property
    def episodes_per_s(self) -> float:
        return self.episodes / self.wall_s

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "output"}
        d["output"] = str(self.output)
        d["episodes_per_s"] = self.episodes_per_s
        return d


def run_episodes(
    indices: list[int], seed: int, noise: float, env_config: RacingConfig, expert: Expert
) -> list[dict[str, Any]]:
    """Drive the episodes ``indices`` as one batch of cars; one dict per episode.

    Each dict has ``index``, ``obs`` (T, D) float32, ``action`` (T, 2) float32,
    ``reward`` (T,) float32, ``terminated`` (bool), ``return``, ``laps`` and
    ``first_lap_time`` (seconds or NaN).
    """
    n, horizon = len(indices), env_config.max_episode_steps
    sim = RacingSim(n, env_config)
    noise_seq = np.zeros((horizon, n, 2))
    for k, ep in enumerate(indices):
        rng, _ = seeding.np_random(episode_seed(seed, ep, "demo"))
        sim.reset_car(k, rng)
        if noise > 0:
            noise_seq[:, k] = np.random.default_rng(episode_seed(seed, ep, "noise")).normal(
                0.0, noise, (horizon, 2)
            )
    obs = np.empty((horizon, n, env_config.obs_dim), dtype=np.float32)
    act = np.empty((horizon, n, 2), dtype=np.float32)
    rew = np.empty((horizon, n), dtype=np.float32)
    length = np.full(n, horizon)
    terminated = np.zeros(n, dtype=bool)
    alive = np.ones(n, dtype=bool)
    laps = np.zeros(n)
    first_lap = np.full(n, np.nan)
    obs[0] = sim.observe()
    for t in range(horizon):
        clean = expert.act_sim(sim)
        act[t] = clean
        reward, term, trunc, _ = sim.step(np.clip(clean + noise_seq[t], -1.0, 1.0))
        rew[t] = reward
        ended = alive & (term | trunc)
        length[ended] = t + 1
        # Snapshot at the episode's end: finished cars keep moving in the batch.
        laps[ended] = sim.progress[ended] / sim.t_len[ended]
        first_lap[ended] = sim.first_lap_time[ended]
        terminated |= ended & term
        alive &= ~ended
        if not alive.any():
            break
        live = np.flatnonzero(alive)
        obs[t + 1, live] = sim.observe(live)  # finished cars are no longer observed
    episodes = []
    for k, ep in enumerate(indices):
        ln = int(length[k])
        episodes.append(
            {
                "index": ep,
                "obs": obs[:ln, k].copy(),
                "action": act[:ln, k].copy(),
                "reward": rew[:ln, k].copy(),
                "terminated": bool(terminated[k]),
                "return": float(rew[:ln, k].astype(np.float64).sum()),
                "laps": float(laps[k]),
                "first_lap_time": float(first_lap[k]),
            }
        )
    return episodes


_ARRAYS = ("obs", "action", "reward")


def _run_chunk(task: tuple[list[int], int, float, RacingConfig, Expert]) -> dict[str, Any]:
    """Worker entry: one chunk, packed as a few large arrays (cheap to pickle back)."""
    episodes = run_episodes(*task)
    packed: dict[str, Any] = {k: np.concatenate([ep[k] for ep in episodes]) for k in _ARRAYS}
    packed["meta"] = [{k: v for k, v in ep.items() if k not in _ARRAYS} for ep in episodes]
    packed["lengths"] = [len(ep["reward"]) for ep in episodes]
    return packed


def _unpack(packed: dict[str, Any]) -> list[dict[str, Any]]:
    bounds = np.cumsum([0, *packed["lengths"]])
    return [
        {**meta, **{k: packed[k][bounds[i] : bounds[i + 1]] for k in _ARRAYS}}
        for i, meta in enumerate(packed["meta"])
    ]


def _chunks(n_episodes: int, workers: int, chunk_size: int | None) -> list[list[int]]:
    """Episode index chunks of at most 256 cars (one batch each), ~3 per worker.

    Measured on 2 cores (1000 episodes): a 256-car batch steps ~1.6x more car-steps/s than a
    64-car one, so one process runs the fewest, largest batches; with several workers ~3 chunks
    each balance the load (crashed episodes end early) at little cost in batch size. Shrinking
    the last chunks (guided scheduling) cost more in small batches than it saved at the end.
    """
    if chunk_size is None:
        per_worker = 1 if workers == 1 else 3  # one process needs no balancing
        chunk_size = min(256, max(1, math.ceil(n_episodes / (per_worker * workers))))
    return [
        list(range(i, min(i + chunk_size, n_episodes))) for i in range(0, n_episodes, chunk_size)
    ]


def _imap_watching_workers(pool: Any, tasks: list[Any]):
    """``pool.imap_unordered`` that fails instead of hanging when a worker process dies.

    A worker that raises is reported by the pool itself; one that is killed (out of
    memory, SIGKILL) would leave its task pending forever, so the original worker
    processes are watched while waiting.
    """
    procs = list(pool._pool)  # the workers this pool started; they only exit if killed
    it = pool.imap_unordered(_run_chunk, tasks)
    for _ in range(len(tasks)):
        while True:
            try:
                yield it.next(timeout=0.5)
                break
            except mp.TimeoutError:
                dead = [p for p in procs if p.exitcode is not None]
                if dead:
                    raise CollectError(
                        f"worker process {dead[0].pid} died with exit code {dead[0].exitcode} "
                        "(killed, or out of memory?); try fewer --workers"
                    ) from None


def _check_output(path: Path, overwrite: bool) -> None:
    """Fail before any work if the output cannot be written."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite or choose another --output")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder; choose another --output")
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


def _pool_context() -> mp.context.BaseContext:
    """forkserver where available (safe with threads, cheap per worker), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["rlkit.collect"])
        return ctx
    return mp.get_context("spawn")


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
        progress: show a tqdm bar.

    Raises:
        FileExistsError / PermissionError: the output cannot be written (checked first).
        CollectError: a worker raised; its traceback is in the message.
    """
    t0 = time.perf_counter()
    out = Path(cfg.output)
    _check_output(out, cfg.overwrite)
    # The writer needs pandas/pyarrow (~0.4 s to import): load them in the background while
    # the episodes are driven, not serially after. Workers never import them.
    threading.Thread(target=importlib.import_module, args=("rlkit.lerobot",), daemon=True).start()
    env_config = env_config or cfg.env_config()
    expert = expert or Expert()
    workers = cfg.num_workers
    chunks = _chunks(cfg.episodes, workers, cfg.chunk_size)
    tasks = [(c, cfg.seed, cfg.noise, env_config, expert) for c in chunks]
    results: dict[int, dict[str, Any]] = {}
    bar = tqdm(
        total=cfg.episodes, desc="collect", unit="ep", disable=not progress, dynamic_ncols=True
    )
    try:
        if workers == 1:
            for task in tasks:
                for ep in run_episodes(*task):
                    results[ep["index"]] = ep
                bar.update(len(task[0]))
        else:
            with _pool_context().Pool(processes=min(workers, len(tasks))) as pool:
                for packed in _imap_watching_workers(pool, tasks):
                    for ep in _unpack(packed):
                        results[ep["index"]] = ep
                    bar.update(len(packed["lengths"]))
    except CollectError:
        raise
    except Exception as e:
        remote = getattr(e, "__cause__", None)
        detail = f"\n{remote}" if remote is not None else ""
        raise CollectError(f"a collection worker failed: {type(e).__name__}: {e}{detail}") from e
    finally:
        bar.close()

    t_sim = time.perf_counter() - t0
    episodes = [results[i] for i in range(cfg.episodes)]
    lengths = np.array([len(ep["reward"]) for ep in episodes])
    done = np.zeros(int(lengths.sum()), dtype=bool)
    done[np.cumsum(lengths) - 1] = True
    data = {
        "observation.state": np.concatenate([ep["obs"] for ep in episodes]),
        "action": np.concatenate([ep["action"] for ep in episodes]),
        "next.reward": np.concatenate([ep["reward"] for ep in episodes]),
        "next.done": done,
        "episode_index": np.repeat(np.arange(cfg.episodes, dtype=np.int64), lengths),
    }
    first_laps = np.array([ep["first_lap_time"] for ep in episodes])
    laps_ok = ~np.isnan(first_laps)
    result = CollectResult(
        output=out,
        episodes=cfg.episodes,
        frames=int(lengths.sum()),
        wall_s=0.0,
        mean_return=float(np.mean([ep["return"] for ep in episodes])),
        lap_rate=float(laps_ok.mean()),
        crash_rate=float(np.mean([ep["terminated"] for ep in episodes])),
        mean_first_lap_s=float(first_laps[laps_ok].mean()) if laps_ok.any() else math.nan,
        workers=workers,
    )
    from rlkit.lerobot import write_dataset  # waits for the background import if still running

    extra = run_config_files(cfg, section="collect", argv=argv)
    extra[ENV_META] = json.dumps(env_config.to_dict(), indent=2) + "\n"
    write_dataset(
        out,
        data,
        fps=round(1.0 / env_config.dt),
        tasks=[TASK],
        feature_names={"observation.state": env_config.obs_names, "action": ["steer", "throttle"]},
        robot_type="rlkit_racing_car",
        overwrite=cfg.overwrite,
        extra_files=extra,
    )
    result.wall_s = time.perf_counter() - t0
    write_json_atomic(out / RESULT_FILE, result.to_dict())
    logger.info(
        "collected %d episodes (%d frames) in %.2fs: %.2fs driving, %.2fs writing",
        result.episodes,
        result.frames,
        result.wall_s,
        t_sim,
        result.wall_s - t_sim,
    )
    return result


def load_env_config(dataset_root: str | Path) -> RacingConfig | None:
    """The :class:`RacingConfig` a dataset was recorded with, or None if it has none."""
    path = Path(dataset_root) / ENV_META
    if not path.is_file():
        return None
    try:
        return RacingConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{path}: not a valid rlkit env config ({e}); re-collect the dataset"
        ) from e
