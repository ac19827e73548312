"""Options of ``train_bc.py`` (section ``bc`` of config.yml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlkit.config.fields import check_fields, opt
from rlkit.rollout import ACTION_KEY, OBS_KEY
from rlkit.utils import WORKER_RULES, default_workers

__all__ = ["BCConfig"]


@dataclass
class BCConfig:
    """Options of ``train_bc.py`` (section ``bc`` of config.yml)."""

    data: str = opt("data/demos", "LeRobot dataset folder (v2.1 or v3.0)")
    output: str = opt("runs/bc", "output folder for the policy and logs")
    obs_key: str = opt(
        OBS_KEY,
        "observation feature: a state vector (an MLP policy) or a video, e.g. "
        "observation.images.top of collect --camera (a CNN policy on the decoded frames)",
    )
    action_key: str = opt(ACTION_KEY, "action feature")
    frame_gap: int = opt(
        8,
        "with a video --obs-key: the policy also sees the frame this many steps "
        "earlier, to tell where the car is heading and how fast (0: the current frame only)",
        bounds="[0, 1000]",
    )
    epochs: int = opt(50, "training epochs", bounds="[1, 1e6]")
    batch_size: int = opt(256, "minibatch size", bounds="[1, 2^24]")
    lr: float = opt(1e-3, "Adam learning rate", bounds="(0, 1]")
    hidden: list[int] = opt([256, 256], "hidden layer widths", bounds="[1, 16384]")
    workers: int | None = opt(
        None, f"DataLoader num_workers (default: {WORKER_RULES['bc'][0]})", bounds="[0, 64]"
    )
    loader: Literal["auto", "dataloader", "memory"] = opt(
        "auto", "data path: whole dataset as tensors, or a DataLoader (auto: memory if it fits)"
    )
    pin_memory: Literal["auto", "on", "off"] = opt(
        "auto", "DataLoader pin_memory (auto: on with CUDA)"
    )
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "training device")
    threads: int | None = opt(
        None,
        "torch CPU threads (default: the idle cores -- all cores minus the load "
        "average, min 1 -- or 1 with DataLoader workers; measured in bench/bench_bc.py)",
        bounds="[1, 1024]",
    )
    val_fraction: float = opt(
        0.1, "fraction of episodes held out for validation (split by episode)", bounds="[0, 1)"
    )
    patience: int = opt(
        10, "stop after this many epochs without validation improvement", bounds="[1, 1e6]"
    )
    seed: int = opt(0, "seed for the split, init, shuffling, DAgger, eval", bounds="[0, 2^32)")
    dagger_rounds: int = opt(0, "DAgger rounds after behaviour cloning", bounds="[0, 1000]")
    dagger_episodes: int = opt(
        20, "policy episodes labelled per DAgger round", bounds="[1, 100000]"
    )
    dagger_epochs: int = opt(10, "training epochs after each DAgger round", bounds="[1, 1e6]")
    eval_episodes: int = opt(
        50, "held-out tracks for the final evaluation (0: skip)", bounds="[0, 100000]"
    )
    init_std: float = opt(0.1, "initial action std of the exported SB3 policies", bounds="(0, 1]")
    resume: bool = opt(False, "continue the run in --output")
    overwrite: bool = opt(False, "replace an existing --output run")

    def __post_init__(self) -> None:
        check_fields(self)
        if not 1 <= len(self.hidden) <= 16:
            raise ValueError(f"hidden must be 1 to 16 widths, got {self.hidden}")
        if self.resume and self.overwrite:
            raise ValueError("pass either --resume or --overwrite, not both")

    @property
    def num_workers(self) -> int:
        return default_workers("bc") if self.workers is None else self.workers
