"""BC training data: the dataset's observation/action columns and normalisation (a video
observation decoded once into a uint8 array), the split by episode, and the minibatch loaders
(in-memory tensors or a torch DataLoader)."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlkit.bc.config import BCConfig
from rlkit.envs.sim import RacingConfig
from rlkit.lerobot import DatasetReader, LeRobotFormatError
from rlkit.lerobot.env_meta import load_env_config
from rlkit.progress import progress as make_progress
from rlkit.rollout import CAMERA_KEYS
from rlkit.utils import available_cores

__all__ = [
    "MEMORY_LIMIT_BYTES",
    "BCData",
    "Batches",
    "decode_video_column",
    "frame_gap_rows",
    "gather",
    "load_bc_data",
    "resolve_loader",
    "split_episodes",
]

# In-memory path when the training data is below this size (state datasets always are).
MEMORY_LIMIT_BYTES = 2 * 1024**3


@dataclass
class BCData:
    """Training data in memory: frames, their episodes, and what the env needs.

    A state observation is ``obs`` (N, D) float32 with ``obs_mean``/``obs_std`` (D,); a video
    observation is ``obs`` (N, H, W, 3) uint8 with per-channel ``obs_mean``/``obs_std`` (3,)
    in [0, 1] units, and with ``prev`` (``--frame-gap`` > 0) the row of the frame ``gap``
    steps earlier in the same episode (its first frame for the first ``gap`` steps).
    """

    obs: np.ndarray
    action: np.ndarray  # (N, A) float32, real action units
    episode: np.ndarray  # (N,) int64
    obs_mean: np.ndarray
    obs_std: np.ndarray
    act_low: np.ndarray
    act_high: np.ndarray
    env_config: RacingConfig | None  # None: not rlkit racing data (no evaluation, generic export)
    prev: np.ndarray | None = None  # (N,) int64, video observations with a frame gap
    view: str = "top"  # video observations: the camera view the evaluation renders

    @property
    def pixels(self) -> bool:
        return self.obs.ndim == 4

    def inputs(self, rows: np.ndarray) -> np.ndarray:
        """The policy's input for ``rows``: states (B, D), or frames (B, S, H, W, 3)."""
        return gather(self.obs, rows, self.prev if self.pixels else None, pixels=self.pixels)


def gather(x: Any, rows: Any, prev: Any, *, pixels: bool) -> Any:
    """Rows of ``x`` (numpy or torch alike): states as they are; frames as ``(B, S, ...)``,
    the frame and, with ``prev``, the earlier frame of each row."""
    if not pixels:
        return x[rows]
    if prev is None:
        return x[rows][:, None]
    stack = np.stack if isinstance(x, np.ndarray) else torch.stack
    return stack([x[rows], x[prev[rows]]], 1)


def decode_video_column(
    ds: DatasetReader, key: str, episode: np.ndarray, progress: bool = True
) -> np.ndarray:
    """Every frame of video feature ``key`` as uint8 ``(N, H, W, 3)`` in row order (row ``i``
    belongs to ``episode[i]``), decoded once, episodes on parallel threads (PyAV decodes
    without the GIL)."""
    shape = tuple(int(x) for x in ds.features[key].get("shape", []))
    if len(shape) != 3 or shape[2] != 3:
        raise LeRobotFormatError(
            f"{ds.root}: video feature {key!r} has shape {list(shape)}; expected [H, W, 3]"
        )
    if not (np.diff(episode) >= 0).all():
        raise LeRobotFormatError(f"{ds.root}: frames are not grouped by episode")
    need = len(episode) * math.prod(shape)
    free = _free_memory()
    if free is not None and need > 0.8 * free:
        raise MemoryError(
            f"{ds.root}: decoding {len(episode):,} frames of {key!r} needs {_size(need)} of "
            f"memory, {_size(free)} are free; train on fewer episodes (merge a subset) or "
            "record a smaller --camera"
        )
    eps, first = np.unique(episode, return_index=True)
    counts = np.bincount(np.searchsorted(eps, episode), minlength=len(eps))
    frames = np.empty((len(episode), *shape), dtype=np.uint8)
    bar = make_progress(len(eps), f"decode {key}", "ep", enabled=progress)

    def one(k: int) -> None:
        f = ds.video_frames(int(eps[k]), key)
        if f.shape[1:] != shape:
            raise LeRobotFormatError(
                f"{ds.root}: episode {int(eps[k])} of {key!r} decodes to frames of shape "
                f"{list(f.shape[1:])}, info.json says {list(shape)}"
            )
        frames[first[k] : first[k] + counts[k]] = f

    with ThreadPoolExecutor(max(1, available_cores())) as pool:
        for _ in pool.map(one, range(len(eps))):
            bar.update(1)
    bar.close()
    return frames


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _free_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def frame_gap_rows(episode: np.ndarray, gap: int) -> np.ndarray:
    """For each row, the row ``gap`` frames earlier in its episode (its first frame when the
    episode is younger than that)."""
    rows = np.arange(len(episode))
    first = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
    start = first[np.searchsorted(first, rows, side="right") - 1]
    return np.maximum(rows - gap, start)


def _as_2d(x: np.ndarray, key: str, root: Path) -> np.ndarray:
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise LeRobotFormatError(
            f"{root}: feature '{key}' must be a vector per frame, got shape {x.shape[1:]}; "
            "pass --obs-key/--action-key naming a state/action vector feature"
        )
    return x.astype(np.float32)


def load_bc_data(cfg: BCConfig, progress: bool = False) -> BCData:
    """Read the dataset's observation and action features and their normalisation (a video
    observation: every frame decoded, ``progress`` shown while decoding).

    Raises:
        FileNotFoundError: the dataset folder does not exist.
        LeRobotFormatError: missing keys, wrong shapes, empty data, action size not the env's.
        ValueError: ``--dagger-rounds`` with a video observation (the expert labels states).
        MemoryError: the decoded frames would not fit in the free memory.
    """
    root = Path(cfg.data)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"--data {root} is a file, not a dataset folder; pass the folder of a LeRobot dataset"
        )
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data {root}: no such dataset folder; collect one with collect_demonstrations.py "
            "or pass the path of a LeRobot dataset"
        )
    ds = DatasetReader(root)
    if ds.num_frames == 0:
        raise LeRobotFormatError(f"{root}: the dataset has no frames; collect episodes first")
    if cfg.obs_key not in ds.features:
        raise LeRobotFormatError(
            f"{root}: no feature {cfg.obs_key!r} (features: {', '.join(ds.features)}); "
            "pass --obs-key naming one"
        )
    if ds.features[cfg.obs_key].get("dtype") == "video":
        return _load_pixels(cfg, ds, progress)
    cols = ds.load_columns(list(dict.fromkeys([cfg.obs_key, cfg.action_key, "episode_index"])))
    obs = _as_2d(cols[cfg.obs_key], cfg.obs_key, root)
    act = _as_2d(cols[cfg.action_key], cfg.action_key, root)
    if not (np.isfinite(obs).all() and np.isfinite(act).all()):
        raise LeRobotFormatError(f"{root}: '{cfg.obs_key}' or '{cfg.action_key}' contains NaN/inf")
    stats = ds.stats([cfg.obs_key, cfg.action_key])  # only what training uses must be finite
    s_obs = stats.get(cfg.obs_key, {})
    mean = np.asarray(s_obs.get("mean", obs.mean(axis=0)), dtype=np.float64).reshape(-1)
    std = np.asarray(s_obs.get("std", obs.std(axis=0)), dtype=np.float64).reshape(-1)
    if mean.shape != (obs.shape[1],) or std.shape != (obs.shape[1],):
        raise LeRobotFormatError(
            f"{root}/meta/stats.json: stats of '{cfg.obs_key}' have shape {mean.shape}, the data "
            f"has {obs.shape[1]} columns; delete meta/stats.json to recompute it"
        )
    std = np.maximum(std, 1e-3)  # constant sensors (e.g. a ray that never sees a wall)

    env_config = load_env_config(root)
    if env_config is not None:
        if act.shape[1] != 2:
            raise LeRobotFormatError(
                f"{root}: '{cfg.action_key}' has {act.shape[1]} dimensions but the racing env "
                "takes 2 (steer, throttle); pass --action-key naming the env's action"
            )
        if obs.shape[1] != env_config.obs_dim:
            raise LeRobotFormatError(
                f"{root}: '{cfg.obs_key}' has {obs.shape[1]} dimensions but the recorded env "
                f"config (meta/rlkit_env.json) observes {env_config.obs_dim}; re-collect the data"
            )
        low, high = -np.ones(2), np.ones(2)  # the env's action space: SB3's normalised space
    else:
        s_act = stats.get(cfg.action_key, {})
        low = np.asarray(s_act.get("min", act.min(axis=0)), dtype=np.float64).reshape(-1)
        high = np.asarray(s_act.get("max", act.max(axis=0)), dtype=np.float64).reshape(-1)
        high = np.where(high - low < 1e-6, low + 1e-6, high)
    return BCData(
        obs, act, cols["episode_index"].astype(np.int64), mean, std, low, high, env_config
    )


def _load_pixels(cfg: BCConfig, ds: DatasetReader, progress: bool) -> BCData:
    """:func:`load_bc_data` for a video observation (rlkit racing data: evaluated on tracks)."""
    root = ds.root
    if cfg.dagger_rounds:  # before decoding anything
        raise ValueError(
            f"--dagger-rounds labels states, not camera frames: use it with a state --obs-key "
            f"(not the video {cfg.obs_key!r})"
        )
    cols = ds.load_columns(list(dict.fromkeys([cfg.action_key, "episode_index"])))
    act = _as_2d(cols[cfg.action_key], cfg.action_key, root)
    episode = cols["episode_index"].astype(np.int64)
    env_config = load_env_config(root)
    views = {key: view for view, key in CAMERA_KEYS.items()}
    if env_config is None or act.shape[1] != 2 or cfg.obs_key not in views:
        raise LeRobotFormatError(
            f"{root}: BC from a video ({cfg.obs_key!r}) needs rlkit racing data with a 2-D "
            f"action and a camera of {', '.join(views)} (collect_demonstrations.py --camera "
            "SIZE), to drive held-out tracks from the frames it renders"
        )
    if not np.isfinite(act).all():
        raise LeRobotFormatError(f"{root}: '{cfg.action_key}' contains NaN/inf")
    frames = decode_video_column(ds, cfg.obs_key, episode, progress)
    st = ds.stats([cfg.obs_key]).get(cfg.obs_key, {})
    mean = np.asarray(st.get("mean", np.full(3, 0.5)), np.float64).reshape(-1)
    std = np.maximum(np.asarray(st.get("std", np.full(3, 0.25)), np.float64).reshape(-1), 1e-3)
    if mean.shape != (3,) or std.shape != (3,):
        raise LeRobotFormatError(
            f"{root}/meta/stats.json: stats of {cfg.obs_key!r} must have shape (3, 1, 1), got "
            f"{mean.shape}; delete meta/stats.json to recompute it"
        )
    prev = frame_gap_rows(episode, cfg.frame_gap) if cfg.frame_gap else None
    low, high = -np.ones(2), np.ones(2)
    view = views[cfg.obs_key]
    return BCData(frames, act, episode, mean, std, low, high, env_config, prev, view)


def split_episodes(
    episode: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frame masks (train, val); whole episodes go to one side, never split frames."""
    eps = np.unique(episode)
    n_val = round(val_fraction * len(eps)) if len(eps) > 1 else 0
    if val_fraction > 0 and len(eps) > 1:
        n_val = max(1, min(n_val, len(eps) - 1))
    val_eps = np.random.default_rng(seed).permutation(eps)[:n_val]
    val = np.isin(episode, val_eps)
    return ~val, val


# ------------------------------------------------------------------ loaders
class _BatchDataset(torch.utils.data.Dataset):
    """Frames as numpy arrays; ``__getitems__`` returns a whole batch in a few fancy-index
    ops (instead of B ``__getitem__`` calls and a Python-level collate)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, rows: np.ndarray, prev: Any, pixels: bool):
        self.x, self.y, self.rows, self.prev, self.pixels = x, y, rows, prev, pixels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.rows[np.asarray(idx)]
        x = gather(self.x, r, self.prev, pixels=self.pixels)
        return torch.from_numpy(x), torch.from_numpy(self.y[r])


def _keep_batch(batch: Any) -> Any:
    return batch  # __getitems__ already built the batch


class Batches:
    """Shuffled minibatches of (policy input, normalised action) on the training device,
    drawn from ``rows`` of ``x`` / ``y`` (default: every row; inputs as :func:`gather`
    builds them).

    ``kind="memory"``: both arrays live on the device as tensors; each epoch is a random
    permutation sliced into index batches (no workers, no copies per batch).
    ``kind="dataloader"``: a torch ``DataLoader`` with ``num_workers``, ``pin_memory`` and
    ``persistent_workers`` over :class:`_BatchDataset`.
    Both shuffle with a generator seeded by ``(seed, epoch)``, so a resumed run sees the same
    batches as an uninterrupted one.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        kind: str,
        device: torch.device,
        workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        rows: np.ndarray | None = None,
        prev: np.ndarray | None = None,
    ) -> None:
        self.kind, self.device, self.batch_size, self.seed = kind, device, batch_size, seed
        self.pixels = x.ndim == 4
        rows = np.arange(len(x)) if rows is None else rows
        self.n = len(rows)
        self.generator = torch.Generator()
        if kind == "memory":
            self.x = torch.as_tensor(x, device=device)
            self.y = torch.as_tensor(y, device=device)
            self.rows = torch.as_tensor(rows, device=device)
            self.prev = None if prev is None else torch.as_tensor(prev, device=device)
        else:
            self.pin = pin_memory
            self.loader = torch.utils.data.DataLoader(
                _BatchDataset(x, y, rows, prev, self.pixels),
                batch_size=batch_size,
                shuffle=True,
                generator=self.generator,
                num_workers=workers,
                pin_memory=pin_memory,
                persistent_workers=workers > 0,
                collate_fn=_keep_batch,
            )

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def epoch(self, epoch: int):
        self.generator.manual_seed(self.seed * 100_003 + epoch)
        if self.kind == "memory":
            perm = torch.randperm(self.n, generator=self.generator).to(self.device)
            for i in range(0, self.n, self.batch_size):
                r = self.rows[perm[i : i + self.batch_size]]
                yield gather(self.x, r, self.prev, pixels=self.pixels), self.y[r]
        else:
            for xb, yb in self.loader:
                yield (
                    xb.to(self.device, non_blocking=self.pin),
                    yb.to(self.device, non_blocking=self.pin),
                )


def resolve_loader(cfg: BCConfig, nbytes: int) -> str:
    """``auto``: the in-memory path whenever the data fits (measured faster on CPU and GPU,
    see README), else the DataLoader."""
    if cfg.loader != "auto":
        return cfg.loader
    return "memory" if nbytes <= MEMORY_LIMIT_BYTES else "dataloader"
