"""Options and result of ``train_world_model.py`` (section ``world_model`` of config.yml)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rlkit.config.fields import check_fields, opt
from rlkit.planet.envs import IMAGE_SIZE, PixelEnv, make_pixel_env
from rlkit.planet.model import PRESETS, ModelSizes, cpu_has_bf16
from rlkit.planet.planner import PlannerConfig

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

    data_dir: str = opt(
        "data/world_episodes", "episode folder (created; existing episodes reused)", positional=True
    )
    output_dir: str = opt(
        "runs/world_model", "run folder (an existing run there is resumed)", positional=True
    )
    env: Literal["pendulum", "racing"] = opt("pendulum", "pixel environment (64x64x3 frames)")
    action_repeat: int = opt(
        4,
        "env steps per action: the planner's 12 steps see 2.4 s of racing ahead "
        "(both envs learned more at 4 than at 2 in the same minutes)",
        bounds="[1, 1000]",
    )
    max_episode_steps: int | None = opt(
        None, "env steps before truncation (default: the env's)", bounds="[1, 1e6]"
    )
    pixel_render: Literal["native", "gym"] = opt(
        "native", "pendulum frames: numpy at 64 px, or gymnasium's pygame 500 px shrunk"
    )
    camera_view: Literal["top", "ego"] = opt(
        "top",
        "racing frames: top (the whole track) or ego (behind the car, the road ahead "
        "in the same place on every track)",
    )
    dashboard: bool = opt(
        True,
        "racing frames: speed and steering bars in the bottom 4 rows (neither is "
        "visible in one frame otherwise)",
    )
    seed_episodes: int = opt(
        5, "random-policy episodes the data must hold before training", bounds="[0, 1e6]"
    )
    iterations: int = opt(100, "training iterations", bounds="[1, 1e7]")
    train_steps: int = opt(100, "gradient steps per iteration", bounds="[1, 1e7]")
    collect_episodes: int = opt(1, "planner episodes collected per iteration", bounds="[0, 1e4]")
    preset: Literal["auto", "cpu", "paper"] = opt(
        "auto", "sizes (auto: paper with CUDA, cpu without)"
    )
    batch_size: int | None = opt(
        None, "sequences per batch (default: preset, cpu 16 / paper 50)", bounds="[1, 4096]"
    )
    seq_len: int | None = opt(
        None, "actions per sequence (default: preset, cpu 32 / paper 50)", bounds="[1, 10000]"
    )
    cnn_depth: int | None = opt(
        None, "conv channels d-2d-4d-8d (default: preset, 16 / 32)", bounds="[1, 1024]"
    )
    deter_size: int | None = opt(
        None, "GRU state size (default: preset, 100 / 200)", bounds="[1, 16384]"
    )
    stoch_size: int | None = opt(
        None, "stochastic state size (default: preset, 16 / 30)", bounds="[1, 4096]"
    )
    hidden_size: int | None = opt(
        None, "hidden layer width (default: preset, 100 / 200)", bounds="[1, 16384]"
    )
    lr: float = opt(1e-3, "Adam learning rate", bounds="[1e-10, 1]")
    grad_clip: float = opt(1000.0, "gradient norm clip", bounds="(0, inf)")
    free_nats: float | None = opt(
        None,
        "KL free nats per step (default: preset, cpu 1 / paper 3 as PlaNet)",
        bounds="[0, inf)",
    )
    kl_balance: float | None = opt(
        None,
        "DreamerV2's KL balancing: the share alpha in (0, 1) of the KL that trains "
        "the prior (the rest trains the posterior); 0: PlaNet's plain KL (default: "
        "preset, cpu 0.8 / paper 0; bench_world_model.py --ablation)",
        bounds="[0, 1)",
        why="0: plain KL",
    )
    plan_horizon: int = opt(12, "CEM planning horizon", bounds="[1, 1000]")
    candidates: int | None = opt(
        None, "CEM candidates (default: preset, 300 / 1000)", bounds="[1, 1e6]"
    )
    top_k: int | None = opt(
        None, "CEM elite sequences (default: preset, 30 / 100)", bounds="[1, 1e6]"
    )
    cem_iterations: int | None = opt(
        None, "CEM iterations (default: preset, 5 / 10)", bounds="[1, 1000]"
    )
    explore_noise: float = opt(
        0.3, "std of Gaussian action noise while collecting", bounds="[0, inf)"
    )
    eval_every: int = opt(10, "evaluate every K iterations (0: never)", bounds="[0, 1e7]")
    eval_episodes: int = opt(1, "episodes per evaluation", bounds="[0, 1e4]")
    checkpoint_every: int = opt(1, "checkpoint every N iterations", bounds="[1, inf)")
    keep_checkpoints: int = opt(3, "newest checkpoints kept", bounds="[1, 1e4]")
    loading_workers: int = opt(
        4,
        "threads that discover, validate and load episode files",
        aliases=["world_loading_workers"],
        bounds="[1, 256]",
    )
    parallel_loading: bool = opt(True, "load episodes with a thread pool (--no-parallel-loading)")
    num_workers: int = opt(
        0, "DataLoader worker processes (0: batches built in-process)", bounds="[0, 64]"
    )
    preload_images: bool = opt(False, "hold frames in RAM pre-converted to --preload-dtype")
    preload_dtype: Literal["float16", "float32", "uint8"] = opt(
        "uint8", "dtype of preloaded frames"
    )
    cache_images: bool = opt(
        False, "lazy mode: read episodes on demand into an LRU cache (large data)"
    )
    cache_size: float = opt(2048.0, "LRU cache bound, MB", bounds="[1e-3, 1e8]", why="MB")
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "training device")
    precision: Literal["auto", "fp32", "bf16"] = opt(
        "auto",
        "conv encoder/decoder arithmetic (auto: bf16 on a CPU with native "
        "bfloat16, e.g. AVX512-BF16 or AMX; fp32 elsewhere and on CUDA); the RSSM, reward "
        "head and loss are float32 either way",
    )
    threads: int | None = opt(
        None,
        "torch CPU threads for training (default: the idle cores -- all cores "
        "minus the load average, min 1; planning always uses 1; see bench_world_model.py)",
        bounds="[1, 1024]",
    )
    seed: int = opt(0, "run seed (episodes, init, batches)", bounds="[0, 2^32)")
    max_minutes: float | None = opt(
        None,
        "wall-time budget: the run stops at the first gradient step, episode or "
        "evaluation past it (even inside an iteration) and saves a checkpoint",
        bounds="[1e-3, 1e6]",
    )
    tensorboard: bool = opt(True, "write TensorBoard events to tb/")
    resume: bool = opt(
        True,
        "continue the run in output_dir from its newest checkpoint "
        "(--no-resume: refuse to start where checkpoints exist)",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.cache_images and self.preload_images:
            raise ValueError("pass either --preload-images or --cache-images, not both")
        if self.pixel_render != "native" and self.env != "pendulum":
            raise ValueError("--pixel-render gym applies to --env pendulum only")
        if self.camera_view != "top" and self.env != "racing":
            raise ValueError("--camera-view applies to --env racing only")
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
