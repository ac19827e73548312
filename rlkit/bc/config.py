"""Options of ``train_bc.py`` (section ``bc`` of config.yml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlkit.rollout import ACTION_KEY, OBS_KEY
from rlkit.utils import WORKER_RULES, default_workers

__all__ = ["BCConfig"]


@dataclass
class BCConfig:
    """Options of ``train_bc.py`` (section ``bc`` of config.yml)."""

    data: str = field(
        default="data/demos", metadata={"help": "LeRobot dataset folder (v2.1 or v3.0)"}
    )
    output: str = field(
        default="runs/bc", metadata={"help": "output folder for the policy and logs"}
    )
    obs_key: str = field(
        default=OBS_KEY,
        metadata={
            "help": "observation feature: a state vector (an MLP policy) or a video, e.g. "
            "observation.images.top of collect --camera (a CNN policy on the decoded frames)"
        },
    )
    action_key: str = field(default=ACTION_KEY, metadata={"help": "action feature"})
    frame_gap: int = field(
        default=8,
        metadata={
            "help": "with a video --obs-key: the policy also sees the frame this many steps "
            "earlier, to tell where the car is heading and how fast (0: the current frame only)"
        },
    )
    epochs: int = field(default=50, metadata={"help": "training epochs"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    hidden: list[int] = field(
        default_factory=lambda: [256, 256], metadata={"help": "hidden layer widths"}
    )
    workers: int | None = field(
        default=None,
        metadata={"help": f"DataLoader num_workers (default: {WORKER_RULES['bc'][0]})"},
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
            (0 <= self.frame_gap <= 1000, f"frame_gap must be in [0, 1000], got {self.frame_gap}"),
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
