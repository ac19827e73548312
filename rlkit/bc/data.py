"""BC training data: the dataset's state/action columns and normalisation, the split by
episode, and the minibatch loaders (in-memory tensors or a torch DataLoader)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlkit.bc.config import BCConfig
from rlkit.envs.sim import RacingConfig
from rlkit.lerobot import DatasetReader, LeRobotFormatError
from rlkit.lerobot.env_meta import load_env_config

__all__ = [
    "MEMORY_LIMIT_BYTES",
    "BCData",
    "Batches",
    "load_bc_data",
    "resolve_loader",
    "split_episodes",
]

# In-memory path when the training data is below this size (state datasets always are).
MEMORY_LIMIT_BYTES = 2 * 1024**3


@dataclass
class BCData:
    """Training data in memory: frames, their episodes, and what the env needs."""

    obs: np.ndarray  # (N, D) float32, raw
    action: np.ndarray  # (N, A) float32, real action units
    episode: np.ndarray  # (N,) int64
    obs_mean: np.ndarray
    obs_std: np.ndarray
    act_low: np.ndarray
    act_high: np.ndarray
    env_config: RacingConfig | None  # None: not rlkit racing data (no evaluation, generic export)


def _as_2d(x: np.ndarray, key: str, root: Path) -> np.ndarray:
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise LeRobotFormatError(
            f"{root}: feature '{key}' must be a vector per frame, got shape {x.shape[1:]}; "
            "pass --obs-key/--action-key naming a state/action vector feature"
        )
    return x.astype(np.float32)


def load_bc_data(cfg: BCConfig) -> BCData:
    """Read the dataset's state and action features and their normalisation.

    Raises:
        FileNotFoundError: the dataset folder does not exist.
        LeRobotFormatError: missing keys, wrong shapes, empty data, action size not the env's.
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
    """Frames as numpy arrays; ``__getitems__`` returns a whole batch in two fancy-index ops
    (instead of B ``__getitem__`` calls and a Python-level collate)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.x[i]), torch.from_numpy(self.y[i])

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        i = np.asarray(idx)
        return torch.from_numpy(self.x[i]), torch.from_numpy(self.y[i])


def _keep_batch(batch: Any) -> Any:
    return batch  # __getitems__ already built the batch


class Batches:
    """Shuffled minibatches of (obs, normalised action) on the training device.

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
    ) -> None:
        self.kind, self.device, self.batch_size, self.seed = kind, device, batch_size, seed
        self.n = len(x)
        self.generator = torch.Generator()
        if kind == "memory":
            self.x = torch.as_tensor(x, device=device)
            self.y = torch.as_tensor(y, device=device)
        else:
            self.pin = pin_memory
            self.loader = torch.utils.data.DataLoader(
                _BatchDataset(x, y),
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
                idx = perm[i : i + self.batch_size]
                yield self.x[idx], self.y[idx]
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
