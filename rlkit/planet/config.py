"""Options and result of ``train_world_model.py`` (section ``world_model`` of config.yml)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from rlkit.planet.envs import IMAGE_SIZE, PixelEnv, make_pixel_env
from rlkit.planet.model import PRESETS, ModelSizes, cpu_has_bf16
from rlkit.planet.planner import PlannerConfig
from rlkit.utils import check_ranges

__all__ = ["WorldModelConfig", "WorldModelResult", "summary_text"]

#: Training and planning sizes per preset (model widths are in ``model.PRESETS``). The cpu
#: preset keeps a B=16 x L=32 step near a second on 2 cores (bench/bench_world_model.py).
RUN_PRESETS: dict[str, dict[str, int]] = {
    "cpu": {"batch_size": 16, "seq_len": 32, "candidates": 300, "top_k": 30, "cem_iterations": 5},
    "paper": {
        "batch_size": 50,
        "seq_len": 50,
        "candidates": 1000,
        "top_k": 100,
        "cem_iterations": 10,
    },
}

#: The loss per preset: PlaNet's (free nats 3, plain KL) for the paper; for the cpu preset
#: KL balancing and 1 free nat, which predicted 12-step returns 2.6x more accurately after
#: 5 minutes of training on the same data (bench_world_model.py --ablation).
LOSS_PRESETS: dict[str, dict[str, float]] = {
    "cpu": {"free_nats": 1.0, "kl_balance": 0.8},
    "paper": {"free_nats": 3.0, "kl_balance": 0.0},
}


@dataclass
class WorldModelConfig:
    """Options of ``train_world_model.py`` (section ``world_model`` of config.yml)."""

    data_dir: str = field(
        default="data/world_episodes",
        metadata={"positional": True, "help": "episode folder (created; existing episodes reused)"},
    )
    output_dir: str = field(
        default="runs/world_model",
        metadata={"positional": True, "help": "run folder (an existing run there is resumed)"},
    )
    env: Literal["pendulum", "racing"] = field(
        default="pendulum", metadata={"help": "pixel environment (64x64x3 frames)"}
    )
    action_repeat: int = field(
        default=4,
        metadata={
            "help": "env steps per action: the planner's 12 steps see 2.4 s of racing ahead "
            "(both envs learned more at 4 than at 2 in the same minutes)"
        },
    )
    max_episode_steps: int | None = field(
        default=None, metadata={"help": "env steps before truncation (default: the env's)"}
    )
    pixel_render: Literal["native", "gym"] = field(
        default="native",
        metadata={"help": "pendulum frames: numpy at 64 px, or gymnasium's pygame 500 px shrunk"},
    )
    camera_view: Literal["top", "ego"] = field(
        default="top",
        metadata={
            "help": "racing frames: top (the whole track) or ego (behind the car, the road ahead "
            "in the same place on every track)"
        },
    )
    dashboard: bool = field(
        default=True,
        metadata={
            "help": "racing frames: speed and steering bars in the bottom 4 rows (neither is "
            "visible in one frame otherwise)"
        },
    )
    seed_episodes: int = field(
        default=5, metadata={"help": "random-policy episodes the data must hold before training"}
    )
    iterations: int = field(default=100, metadata={"help": "training iterations"})
    train_steps: int = field(default=100, metadata={"help": "gradient steps per iteration"})
    collect_episodes: int = field(
        default=1, metadata={"help": "planner episodes collected per iteration"}
    )
    preset: Literal["auto", "cpu", "paper"] = field(
        default="auto", metadata={"help": "sizes (auto: paper with CUDA, cpu without)"}
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "sequences per batch (default: preset, cpu 16 / paper 50)"}
    )
    seq_len: int | None = field(
        default=None, metadata={"help": "actions per sequence (default: preset, cpu 32 / paper 50)"}
    )
    cnn_depth: int | None = field(
        default=None, metadata={"help": "conv channels d-2d-4d-8d (default: preset, 16 / 32)"}
    )
    deter_size: int | None = field(
        default=None, metadata={"help": "GRU state size (default: preset, 100 / 200)"}
    )
    stoch_size: int | None = field(
        default=None, metadata={"help": "stochastic state size (default: preset, 16 / 30)"}
    )
    hidden_size: int | None = field(
        default=None, metadata={"help": "hidden layer width (default: preset, 100 / 200)"}
    )
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    grad_clip: float = field(default=1000.0, metadata={"help": "gradient norm clip"})
    free_nats: float | None = field(
        default=None,
        metadata={"help": "KL free nats per step (default: preset, cpu 1 / paper 3 as PlaNet)"},
    )
    kl_balance: float | None = field(
        default=None,
        metadata={
            "help": "DreamerV2's KL balancing: the share alpha in (0, 1) of the KL that trains "
            "the prior (the rest trains the posterior); 0: PlaNet's plain KL (default: "
            "preset, cpu 0.8 / paper 0; bench_world_model.py --ablation)"
        },
    )
    plan_horizon: int = field(default=12, metadata={"help": "CEM planning horizon"})
    candidates: int | None = field(
        default=None, metadata={"help": "CEM candidates (default: preset, 300 / 1000)"}
    )
    top_k: int | None = field(
        default=None, metadata={"help": "CEM elite sequences (default: preset, 30 / 100)"}
    )
    cem_iterations: int | None = field(
        default=None, metadata={"help": "CEM iterations (default: preset, 5 / 10)"}
    )
    explore_noise: float = field(
        default=0.3, metadata={"help": "std of Gaussian action noise while collecting"}
    )
    eval_every: int = field(default=10, metadata={"help": "evaluate every K iterations (0: never)"})
    eval_episodes: int = field(default=1, metadata={"help": "episodes per evaluation"})
    checkpoint_every: int = field(default=1, metadata={"help": "checkpoint every N iterations"})
    keep_checkpoints: int = field(default=3, metadata={"help": "newest checkpoints kept"})
    loading_workers: int = field(
        default=4,
        metadata={
            "aliases": ["world_loading_workers"],
            "help": "threads that discover, validate and load episode files",
        },
    )
    parallel_loading: bool = field(
        default=True, metadata={"help": "load episodes with a thread pool (--no-parallel-loading)"}
    )
    num_workers: int = field(
        default=0, metadata={"help": "DataLoader worker processes (0: batches built in-process)"}
    )
    preload_images: bool = field(
        default=False, metadata={"help": "hold frames in RAM pre-converted to --preload-dtype"}
    )
    preload_dtype: Literal["float16", "float32", "uint8"] = field(
        default="uint8", metadata={"help": "dtype of preloaded frames"}
    )
    cache_images: bool = field(
        default=False,
        metadata={"help": "lazy mode: read episodes on demand into an LRU cache (large data)"},
    )
    cache_size: float = field(default=2048.0, metadata={"help": "LRU cache bound, MB"})
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata={"help": "training device"}
    )
    precision: Literal["auto", "fp32", "bf16"] = field(
        default="auto",
        metadata={
            "help": "conv encoder/decoder arithmetic (auto: bf16 on a CPU with native "
            "bfloat16, e.g. AVX512-BF16 or AMX; fp32 elsewhere and on CUDA); the RSSM, reward "
            "head and loss are float32 either way"
        },
    )
    threads: int | None = field(
        default=None,
        metadata={
            "help": "torch CPU threads for training (default: the idle cores -- all cores "
            "minus the load average, min 1; planning always uses 1; see bench_world_model.py)"
        },
    )
    seed: int = field(default=0, metadata={"help": "run seed (episodes, init, batches)"})
    max_minutes: float | None = field(
        default=None,
        metadata={
            "help": "wall-time budget: the run stops at the first gradient step, episode or "
            "evaluation past it (even inside an iteration) and saves a checkpoint"
        },
    )
    tensorboard: bool = field(default=True, metadata={"help": "write TensorBoard events to tb/"})
    resume: bool = field(
        default=True,
        metadata={
            "help": "continue the run in output_dir from its newest checkpoint "
            "(--no-resume: refuse to start where checkpoints exist)"
        },
    )

    def __post_init__(self) -> None:
        positive = [
            "action_repeat",
            "iterations",
            "train_steps",
            "plan_horizon",
            "checkpoint_every",
            "keep_checkpoints",
            "loading_workers",
        ]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        optional_positive = [
            "max_episode_steps",
            "batch_size",
            "seq_len",
            "cnn_depth",
            "deter_size",
            "stoch_size",
            "hidden_size",
            "candidates",
            "top_k",
            "cem_iterations",
            "threads",
        ]
        for name in optional_positive:
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (or null for the default), got {v}")
        for name in ("seed_episodes", "collect_episodes", "eval_every", "eval_episodes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        checks = [
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (
                self.free_nats is None or self.free_nats >= 0,
                f"free_nats must be >= 0 or null, got {self.free_nats}",
            ),
            (
                self.kl_balance is None or 0 <= self.kl_balance < 1,
                f"kl_balance must be in [0, 1) (0: plain KL) or null, got {self.kl_balance}",
            ),
            (self.explore_noise >= 0, f"explore_noise must be >= 0, got {self.explore_noise}"),
            (self.cache_size > 0, f"cache_size must be > 0 MB, got {self.cache_size}"),
            (
                not (self.cache_images and self.preload_images),
                "pass either --preload-images or --cache-images, not both",
            ),
            (
                self.max_minutes is None or self.max_minutes > 0,
                f"max_minutes must be > 0, got {self.max_minutes}",
            ),
            (
                self.pixel_render == "native" or self.env == "pendulum",
                "--pixel-render gym applies to --env pendulum only",
            ),
            (
                self.camera_view == "top" or self.env == "racing",
                "--camera-view applies to --env racing only",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        # upper bounds: a typo (1e20) is an error, not an allocation the kernel kills
        check_ranges(
            self,
            {
                "action_repeat": (1, 1000),
                "max_episode_steps": (1, 1e6),
                "seed_episodes": (0, 1e6),
                "iterations": (1, 1e7),
                "train_steps": (1, 1e7),
                "collect_episodes": (0, 1e4),
                "batch_size": (1, 4096),
                "seq_len": (1, 10_000),
                "cnn_depth": (1, 1024),
                "deter_size": (1, 16384),
                "stoch_size": (1, 4096),
                "hidden_size": (1, 16384),
                "lr": (1e-10, 1),
                "plan_horizon": (1, 1000),
                "candidates": (1, 1e6),
                "cem_iterations": (1, 1000),
                "eval_every": (0, 1e7),
                "eval_episodes": (0, 1e4),
                "keep_checkpoints": (1, 1e4),
                "loading_workers": (1, 256),
                "num_workers": (0, 64),
                "cache_size": (1e-3, 1e8),
                "threads": (1, 1024),
                "seed": (0, 2**32 - 1),
                "max_minutes": (1e-3, 1e6),
            },
        )
        if self.top_k is not None and self.candidates is not None and self.top_k > self.candidates:
            raise ValueError(f"top_k must be <= candidates ({self.candidates}), got {self.top_k}")

    # -- derived values
    def preset_name(self, device: torch.device) -> str:
        if self.preset != "auto":
            return self.preset
        return "paper" if device.type == "cuda" else "cpu"

    def sizes(self, device: torch.device) -> ModelSizes:
        base = PRESETS[self.preset_name(device)]
        return ModelSizes(
            cnn_depth=self.cnn_depth or base.cnn_depth,
            deter=self.deter_size or base.deter,
            stoch=self.stoch_size or base.stoch,
            hidden=self.hidden_size or base.hidden,
        )

    def bf16_convs(self, device: torch.device) -> bool:
        """Whether the conv encoder/decoder compute in bfloat16 (``--precision``)."""
        if self.precision != "auto":
            return self.precision == "bf16"
        return device.type == "cpu" and cpu_has_bf16()

    def loss_value(self, name: str, device: torch.device) -> float:
        """``free_nats`` or ``kl_balance``: the flag, else the preset's."""
        value = getattr(self, name)
        return value if value is not None else LOSS_PRESETS[self.preset_name(device)][name]

    def run_value(self, name: str, device: torch.device) -> int:
        """``batch_size``, ``seq_len``, ``candidates``, ``top_k`` or ``cem_iterations``."""
        value = getattr(self, name)
        return value if value is not None else RUN_PRESETS[self.preset_name(device)][name]

    def planner(self, device: torch.device) -> PlannerConfig:
        return PlannerConfig(
            horizon=self.plan_horizon,
            candidates=self.run_value("candidates", device),
            top_k=min(self.run_value("top_k", device), self.run_value("candidates", device)),
            iterations=self.run_value("cem_iterations", device),
        )

    @property
    def loading_threads(self) -> int:
        """Episode-loading threads actually used (1 with --no-parallel-loading). Worker
        *processes* are ``num_workers`` (the DataLoader's), as in every tool's config."""
        return self.loading_workers if self.parallel_loading else 1

    def make_env(self) -> PixelEnv:
        """The pixel env these settings describe."""
        return make_pixel_env(
            self.env,
            self.action_repeat,
            self.max_episode_steps,
            self.pixel_render,
            self.camera_view,
            self.dashboard,
        )

    def env_spec(self) -> dict[str, Any]:
        """What episodes on disk and checkpoints must match (``env.json``)."""
        spec = {
            "env": self.env,
            "action_repeat": self.action_repeat,
            "max_episode_steps": self.max_episode_steps,
            "image_size": IMAGE_SIZE,
        }
        # Written only when not the first setting, so folders written before each option
        # stay compatible.
        if self.camera_view != "top":
            spec["camera_view"] = self.camera_view
        if self.env == "racing" and self.dashboard:
            spec["dashboard"] = True
        return spec


@dataclass
class WorldModelResult:
    output: Path
    iterations: int
    train_steps: int
    episodes: int
    env_steps: int
    last_loss: dict[str, float]
    eval_return: float
    random_return: float
    train_seconds: float
    batches_per_s: float
    device: str
    preset: str
    resumed_from: int | None = None
    stopped_early: bool = False


def summary_text(r: WorldModelResult) -> str:
    lines = [
        f"  output          {r.output}",
        f"  iterations      {r.iterations}"
        + (f"  (resumed from {r.resumed_from})" if r.resumed_from is not None else "")
        + ("  (stopped by --max-minutes)" if r.stopped_early else ""),
        f"  data            {r.episodes} episodes, {r.env_steps} steps",
        f"  training        {r.train_steps} steps, {r.train_seconds:.1f} s this run "
        f"({r.batches_per_s:.2f} batches/s, {r.device}, preset {r.preset})",
    ]
    if r.last_loss:
        lines.append(
            f"  last loss       {r.last_loss['loss']:.2f} (obs {r.last_loss['obs']:.2f}, "
            f"reward {r.last_loss['reward']:.3f}, kl {r.last_loss['kl']:.2f})"
        )
    if not math.isnan(r.eval_return):
        lines.append(f"  eval return     {r.eval_return:.1f}")
    if not math.isnan(r.random_return):
        lines.append(f"  random return   {r.random_return:.1f} (seed episodes of this run)")
    return "\n".join(lines)
