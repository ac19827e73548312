"""Behaviour cloning from a LeRobot dataset, with DAgger, evaluation and SB3 export.

Data flow::

    LeRobot dataset (v2.x / v3.0) --load_columns--> obs (N, D), action (N, A)
        split by episode into train / val
        normalisation: obs mean/std from meta/stats.json; actions scaled to [-1, 1] by the
        env's action bounds (rlkit data) or the dataset's min/max
    -> loader: "memory" (tensors on the device, shuffled index batches) or a torch DataLoader
       (num_workers, pin_memory, persistent_workers) over a batched Dataset
    -> MLP (BCPolicy), MSE on normalised actions, Adam; early stopping on validation loss
    -> DAgger rounds: drive the policy, label visited states with the expert, retrain
    -> eval on held-out tracks (policy and expert, same tracks), SB3 exports for RL

Output folder::

    bc_policy.pt          best policy (BCPolicy.load)
    policy_{ppo,sac,td3}.zip + bc_export.json   SB3 models with the BC weights (PPO.load, ...),
                          for train_rl.py --init-from
    checkpoint.pt         latest training state (--resume)
    train_log.csv         epoch, phase, train/val loss, seconds
    eval.json             policy and expert on the same held-out tracks
    dagger/               aggregated DAgger data (LeRobot v3.0), if --dagger-rounds > 0
    config.resolved.yml, command.txt
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from tqdm.auto import tqdm

from rlkit.envs.expert import Expert
from rlkit.envs.racing import make_observation_space
from rlkit.envs.sim import RacingConfig
from rlkit.lerobot import DatasetReader, LeRobotFormatError, write_dataset
from rlkit.lerobot.env_meta import load_env_config
from rlkit.policy import BCPolicy, export_sb3
from rlkit.report import eval_payload, format_eval_table
from rlkit.rollout import (
    ACTION_KEY,
    OBS_KEY,
    EvalResult,
    evaluate_drivers,
    expert_driver,
    policy_driver,
    rollout,
)
from rlkit.rundir import RunDir, say
from rlkit.utils import (
    default_workers,
    from_json,
    idle_cores,
    resolve_device,
    torch_save_atomic,
    trim_csv,
    write_json_atomic,
)

__all__ = ["BCConfig", "BCData", "BCResult", "load_bc_data", "train_bc"]

logger = logging.getLogger(__name__)

# In-memory path when the training data is below this size (state datasets always are).
MEMORY_LIMIT_BYTES = 2 * 1024**3


@dataclass
class BCConfig:
    """Options of ``train_bc.py`` (section ``bc`` of config.yml)."""

    data: str = field(
        default="data/demos", metadata={"help": "LeRobot dataset folder (v2.1 or v3.0)"}
    )
    output: str = field(
        default="runs/bc", metadata={"help": "output folder for the policy and logs"}
    )
    obs_key: str = field(default=OBS_KEY, metadata={"help": "observation feature"})
    action_key: str = field(default=ACTION_KEY, metadata={"help": "action feature"})
    epochs: int = field(default=50, metadata={"help": "training epochs"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    hidden: list[int] = field(
        default_factory=lambda: [256, 256], metadata={"help": "hidden layer widths"}
    )
    workers: int | None = field(
        default=None,
        metadata={"help": "DataLoader num_workers (default: cores / 2, min 1, cap 8)"},
    )
    loader: Literal["auto", "dataloader", "memory"] = field(
        default="auto",
        metadata={
            "help": "data path: whole dataset as tensors, or a DataLoader (auto: memory if it fits)"
        },
    )
    pin_memory: Literal["auto", "on", "off"] = field(
        default="auto", metadata={"help": "DataLoader pin_memory (auto: on with CUDA)"}
    )
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata={"help": "training device"}
    )
    threads: int | None = field(
        default=None,
        metadata={
            "help": "torch CPU threads (default: the idle cores -- all cores minus the load "
            "average, min 1 -- or 1 with DataLoader workers; measured in bench/bench_bc.py)"
        },
    )
    val_fraction: float = field(
        default=0.1,
        metadata={"help": "fraction of episodes held out for validation (split by episode)"},
    )
    patience: int = field(
        default=10, metadata={"help": "stop after this many epochs without validation improvement"}
    )
    seed: int = field(
        default=0, metadata={"help": "seed for the split, init, shuffling, DAgger, eval"}
    )
    dagger_rounds: int = field(
        default=0, metadata={"help": "DAgger rounds after behaviour cloning"}
    )
    dagger_episodes: int = field(
        default=20, metadata={"help": "policy episodes labelled per DAgger round"}
    )
    dagger_epochs: int = field(
        default=10, metadata={"help": "training epochs after each DAgger round"}
    )
    eval_episodes: int = field(
        default=50, metadata={"help": "held-out tracks for the final evaluation (0: skip)"}
    )
    init_std: float = field(
        default=0.1, metadata={"help": "initial action std of the exported SB3 policies"}
    )
    resume: bool = field(default=False, metadata={"help": "continue the run in --output"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --output run"})

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.epochs <= 1_000_000, f"epochs must be in [1, 1e6], got {self.epochs}"),
            (
                1 <= self.batch_size <= 2**24,
                f"batch_size must be in [1, 2^24], got {self.batch_size}",
            ),
            (0 < self.lr <= 1, f"lr must be in (0, 1], got {self.lr}"),
            (
                1 <= len(self.hidden) <= 16 and 1 <= min(self.hidden) <= max(self.hidden) <= 16384,
                f"hidden must be 1 to 16 widths in [1, 16384], got {self.hidden}",
            ),
            (
                self.workers is None or 0 <= self.workers <= 64,
                f"workers must be in [0, 64] (DataLoader processes), got {self.workers}",
            ),
            (
                self.threads is None or 1 <= self.threads <= 1024,
                f"threads must be in [1, 1024], got {self.threads}",
            ),
            (0 <= self.seed < 2**32, f"seed must be in [0, 2^32), got {self.seed}"),
            (
                0 <= self.val_fraction < 1,
                f"val_fraction must be in [0, 1), got {self.val_fraction}",
            ),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (
                0 <= self.dagger_rounds <= 1000,
                f"dagger_rounds must be in [0, 1000], got {self.dagger_rounds}",
            ),
            (
                1 <= self.dagger_episodes <= 100_000,
                f"dagger_episodes must be in [1, 100000], got {self.dagger_episodes}",
            ),
            (
                1 <= self.dagger_epochs <= 1_000_000,
                f"dagger_epochs must be in [1, 1e6], got {self.dagger_epochs}",
            ),
            (
                0 <= self.eval_episodes <= 100_000,
                f"eval_episodes must be in [0, 100000], got {self.eval_episodes}",
            ),
            (0 < self.init_std <= 1, f"init_std must be in (0, 1], got {self.init_std}"),
            (not (self.resume and self.overwrite), "pass either --resume or --overwrite, not both"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    @property
    def num_workers(self) -> int:
        return default_workers("bc") if self.workers is None else self.workers


# ------------------------------------------------------------------ data
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


# ------------------------------------------------------------------ training
@dataclass
class BCResult:
    output: Path
    best_val_loss: float
    epochs_run: int
    train_seconds: float
    samples_per_s: float
    loader: str
    device: str
    eval: dict[str, EvalResult] = field(default_factory=dict)


class _Trainer:
    """One optimisation run over a (growing, with DAgger) training set; checkpointable."""

    def __init__(self, cfg: BCConfig, data: BCData, run: RunDir, device: torch.device) -> None:
        self.cfg, self.data, self.run, self.out, self.device = cfg, data, run, run.path, device
        torch.manual_seed(cfg.seed)
        self.policy = BCPolicy(
            data.obs.shape[1],
            data.action.shape[1],
            cfg.hidden,
            data.obs_mean,
            data.obs_std,
            data.act_low,
            data.act_high,
        ).to(device)
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)
        self.best_val = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epoch = 0  # epochs done in the current phase
        self.total_epochs = 0
        self.phase = 0  # 0 = behaviour cloning, k = after DAgger round k
        self.bad_epochs = 0
        self.samples = 0
        self.seconds = 0.0
        self.extra_obs = np.zeros((0, data.obs.shape[1]), np.float32)  # DAgger data
        self.extra_act = np.zeros((0, data.action.shape[1]), np.float32)
        train, val = split_episodes(data.episode, cfg.val_fraction, cfg.seed)
        self.train_mask, self.val_mask = train, val
        self.loader_kind = resolve_loader(cfg, data.obs[train].nbytes + data.action[train].nbytes)

    # -- data
    def batches(self) -> Batches:
        x = np.concatenate([self.data.obs[self.train_mask], self.extra_obs])
        y = self.policy.normalise_action(
            np.concatenate([self.data.action[self.train_mask], self.extra_act])
        )
        kind = self.loader_kind = resolve_loader(self.cfg, x.nbytes + y.nbytes)
        cuda = self.device.type == "cuda"
        pin = cuda and self.cfg.pin_memory != "off"  # auto = on with CUDA
        if self.cfg.pin_memory == "on" and not cuda:
            logger.warning("--pin-memory on has no effect without CUDA; not pinning")
        workers = self.cfg.num_workers if kind == "dataloader" else 0
        return Batches(
            x, y, self.cfg.batch_size, kind, self.device, workers, pin, self.cfg.seed + self.phase
        )

    @torch.no_grad()
    def val_loss(self) -> float:
        if not self.val_mask.any():
            return math.nan
        self.policy.eval()
        x = torch.as_tensor(self.data.obs[self.val_mask], device=self.device)
        y = torch.as_tensor(
            self.policy.normalise_action(self.data.action[self.val_mask]), device=self.device
        )
        losses = [
            nn.functional.mse_loss(
                self.policy(x[i : i + 65536]), y[i : i + 65536], reduction="sum"
            ).item()
            for i in range(0, len(x), 65536)
        ]
        return sum(losses) / y.numel()

    # -- checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.opt.state_dict(),
            "best_val": self.best_val,
            "best_state": self.best_state,
            "epoch": self.epoch,
            "total_epochs": self.total_epochs,
            "phase": self.phase,
            "bad_epochs": self.bad_epochs,
            "samples": self.samples,
            "seconds": self.seconds,
            "extra_obs": self.extra_obs,
            "extra_act": self.extra_act,
            "spec": self.policy.spec(),
        }

    def save_checkpoint(self) -> None:
        torch_save_atomic(self.state(), self.out / "checkpoint.pt")

    def load_checkpoint(self) -> bool:
        """Load ``checkpoint.pt``; a damaged one is skipped with a warning (returns False)."""
        path = self.out / "checkpoint.pt"
        try:
            blob = torch.load(path, map_location=self.device, weights_only=False)
            if not isinstance(blob, dict) or "policy" not in blob:
                raise ValueError("not a train_bc.py checkpoint")
        except Exception as e:  # torch raises many kinds for a truncated or foreign file
            say(f"warning: {path} is damaged ({type(e).__name__}: {e}); starting from epoch 0")
            return False
        if blob.get("spec") != self.policy.spec():
            raise ValueError(
                f"{path}: checkpoint is for a policy {blob.get('spec')}, this run builds "
                f"{self.policy.spec()}; resume with the same --hidden and data, or use a new "
                "--output"
            )
        self.policy.load_state_dict(blob["policy"])
        self.opt.load_state_dict(blob["optimizer"])
        for key in ("best_val", "best_state", "epoch", "total_epochs", "phase", "bad_epochs"):
            setattr(self, key, blob[key])
        self.samples, self.seconds = blob["samples"], blob["seconds"]
        self.extra_obs, self.extra_act = blob["extra_obs"], blob["extra_act"]
        return True

    # -- the loop
    def run_phase(self, epochs: int, log_file: IO[str], progress: bool) -> None:
        """Train up to ``epochs`` epochs (continuing a resumed phase) with early stopping."""
        if self.epoch >= epochs or self.bad_epochs >= self.cfg.patience:
            return
        batches = self.batches()
        log = csv.writer(log_file)
        desc = "bc" if self.phase == 0 else f"dagger {self.phase}"
        bar = tqdm(
            range(self.epoch, epochs),
            desc=desc,
            unit="epoch",
            disable=not progress,
            dynamic_ncols=True,
        )
        for epoch in bar:
            t0 = time.perf_counter()
            self.policy.train()
            total, count = 0.0, 0
            for xb, yb in batches.epoch(epoch):
                loss = nn.functional.mse_loss(self.policy(xb), yb)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                total += loss.item() * len(xb)
                count += len(xb)
            train_loss = total / count
            val = self.val_loss()
            if not math.isfinite(train_loss) or (self.val_mask.any() and not math.isfinite(val)):
                raise ValueError(
                    f"epoch {self.total_epochs + 1}: the loss is not finite (train {train_loss}, "
                    f"val {val}); lower --lr (now {self.cfg.lr}) or check the data in "
                    f"{self.cfg.data}; the last good checkpoint is kept"
                )
            dt = time.perf_counter() - t0
            self.seconds += dt
            self.samples += count
            self.epoch, self.total_epochs = epoch + 1, self.total_epochs + 1
            score = val if not math.isnan(val) else train_loss
            if score < self.best_val:
                self.best_val, self.bad_epochs = score, 0
                self.best_state = {
                    k: v.detach().clone() for k, v in self.policy.state_dict().items()
                }
                self.policy.save(self.out / "bc_policy.pt")
            else:
                self.bad_epochs += 1
            log.writerow(
                [self.total_epochs, self.phase, f"{train_loss:.6g}", f"{val:.6g}", f"{dt:.3f}"]
            )
            log_file.flush()  # the log survives a kill like the checkpoint does
            bar.set_postfix(
                train=f"{train_loss:.4f}", val=f"{val:.4f}", samples_s=f"{count / dt:,.0f}"
            )
            self.save_checkpoint()
            self.run.saved = f"checkpoint at epoch {self.total_epochs}"
            if self.bad_epochs >= self.cfg.patience:
                logger.info("early stop after %d epochs without improvement", self.bad_epochs)
                break
        bar.close()

    def use_best(self) -> None:
        if self.best_state is not None:
            self.policy.load_state_dict(self.best_state)


def dagger_round(
    trainer: _Trainer, round_idx: int, expert: Expert
) -> tuple[np.ndarray, np.ndarray]:
    """Drive ``dagger_episodes`` fresh tracks with the current policy; return the visited
    observations and the expert's labels for them (the states the policy actually reaches),
    step by step (time-major)."""
    cfg, env_config = trainer.cfg, trainer.data.env_config
    assert env_config is not None
    n = cfg.dagger_episodes
    trainer.policy.eval()
    run = rollout(
        policy_driver(trainer.policy),
        env_config,
        cfg.seed,
        range(round_idx * n, (round_idx + 1) * n),
        "dagger",
        labels=expert_driver(expert),
        record_steps=True,
    )
    return run.by_time(run.obs), run.by_time(run.action)


def _write_dagger_dataset(trainer: _Trainer, out: Path) -> None:
    """The aggregated training set (demonstrations + DAgger labels) as a LeRobot dataset."""
    data = trainer.data
    extra = len(trainer.extra_obs)
    # DAgger frames are stored as one extra episode per round's concatenation: keep it simple
    # and honest by giving them their own episode index after the demonstrations.
    demo_eps = np.unique(data.episode, return_inverse=True)[1]
    episode = np.concatenate([demo_eps, np.full(extra, demo_eps.max() + 1)])
    done = np.append(np.diff(episode) != 0, True)  # the last frame of every episode
    write_dataset(
        out,
        {
            trainer.cfg.obs_key: np.concatenate([data.obs, trainer.extra_obs]),
            trainer.cfg.action_key: np.concatenate([data.action, trainer.extra_act]),
            "next.done": done,
            "episode_index": episode,
        },
        fps=round(1.0 / data.env_config.dt) if data.env_config else 20,
        tasks=["behaviour cloning + DAgger labels"],
        overwrite=True,
    )


def _has_checkpoint(out: Path) -> bool:
    return (out / "checkpoint.pt").is_file()


LOG_HEADER = ["epoch", "phase", "train_loss", "val_loss", "seconds"]


def train_bc(cfg: BCConfig, *, argv: list[str] | None = None, progress: bool = True) -> BCResult:
    """Train, DAgger, evaluate and export; see the module docstring for the outputs."""
    data = load_bc_data(cfg)  # validates the input before anything is written
    if cfg.dagger_rounds and data.env_config is None:
        raise ValueError(
            f"--dagger-rounds needs rlkit racing data ({cfg.data} has no meta/rlkit_env.json)"
        )
    device = resolve_device(cfg.device)
    run = RunDir(
        cfg.output, "bc", resume=cfg.resume, overwrite=cfg.overwrite, has_checkpoint=_has_checkpoint
    )
    with run:
        done = run.start(cfg, section="bc", argv=argv)
        if done is not None:
            return from_json(BCResult, done)
        return _train(cfg, data, run, device, progress)


def _train(
    cfg: BCConfig, data: BCData, run: RunDir, device: torch.device, progress: bool
) -> BCResult:
    out = run.path
    trainer = _Trainer(cfg, data, run, device)
    if device.type == "cpu":
        # Measured (bench_bc): a 256x256 MLP at batch 256 trains 1.5x faster on 2 idle cores
        # than on 1, but 5x slower on 2 threads when another process keeps a core busy;
        # DataLoader worker processes need the cores themselves.
        workers = cfg.num_workers if trainer.loader_kind == "dataloader" else 0
        torch.set_num_threads(cfg.threads or (1 if workers else idle_cores()))
    log_path = out / "train_log.csv"
    if run.resuming and trainer.load_checkpoint():
        kept = trim_csv(log_path, lambda r: int(r[0]) <= trainer.total_epochs, LOG_HEADER)
        run.saved = f"checkpoint at epoch {trainer.total_epochs}"
        say(
            f"resuming {out} at epoch {trainer.total_epochs} (phase {trainer.phase}, "
            f"{trainer.epoch} epochs into it); train_log.csv keeps {kept} rows"
        )
    else:
        trim_csv(log_path, lambda r: False, LOG_HEADER)  # a new log: the header only
    expert = Expert()
    with log_path.open("a", newline="") as f:
        # Phase 0: behaviour cloning; phase k: retraining after DAgger round k.
        while True:
            epochs = cfg.epochs if trainer.phase == 0 else cfg.dagger_epochs
            trainer.run_phase(epochs, f, progress)
            if trainer.phase >= cfg.dagger_rounds:
                break
            trainer.use_best()
            obs, act = dagger_round(trainer, trainer.phase, expert)
            trainer.extra_obs = np.concatenate([trainer.extra_obs, obs])
            trainer.extra_act = np.concatenate([trainer.extra_act, act])
            trainer.phase += 1
            trainer.epoch, trainer.bad_epochs = 0, 0
            trainer.best_val = math.inf  # the training set changed; validation restarts
            trainer.save_checkpoint()
            _write_dagger_dataset(trainer, out / "dagger")
            logger.info("DAgger round %d: +%d labelled frames", trainer.phase, len(obs))
    trainer.use_best()
    policy = trainer.policy.cpu().eval()
    policy.save(out / "bc_policy.pt")

    obs_space = (
        make_observation_space(data.env_config)
        if data.env_config is not None
        else spaces.Box(-np.inf, np.inf, (data.obs.shape[1],), np.float32)
    )
    env_dict = data.env_config.to_dict() if data.env_config is not None else None
    export_sb3(policy, out, obs_space, init_std=cfg.init_std, env_config=env_dict)

    result = BCResult(
        output=out,
        best_val_loss=trainer.best_val,
        epochs_run=trainer.total_epochs,
        train_seconds=trainer.seconds,
        samples_per_s=trainer.samples / max(trainer.seconds, 1e-9),
        loader=trainer.loader_kind,
        device=str(device),
    )
    if cfg.eval_episodes and data.env_config is not None:
        drivers = {"bc": policy_driver(policy), "expert": expert_driver(expert)}
        result.eval = evaluate_drivers(drivers, data.env_config, cfg.eval_episodes, cfg.seed)
        write_json_atomic(out / "eval.json", eval_payload(result.eval, cfg.eval_episodes, cfg.seed))
    elif cfg.eval_episodes:
        logger.warning("%s is not rlkit racing data: skipping the evaluation on tracks", cfg.data)
    run.finish(result, summary_text(result))
    return result


def summary_text(result: BCResult) -> str:
    lines = [
        f"  output          {result.output}",
        f"  epochs          {result.epochs_run}  (best val loss {result.best_val_loss:.5f})",
        f"  training        {result.train_seconds:.1f} s  ({result.samples_per_s:,.0f} samples/s, "
        f"{result.loader} loader, {result.device})",
    ]
    if result.eval:
        lines += ["", format_eval_table(result.eval)]
    return "\n".join(lines)
