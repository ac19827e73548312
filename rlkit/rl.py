"""RL fine-tuning with Stable-Baselines3 on the racing env, warm-started from BC.

Pipeline::

    env   --vec batched : RacingVecEnv(N cars, one process)          (default)
          --vec subproc : SubprocVecEnv of N RacingEnv processes     (the seeds' setup)
          --vec dummy   : DummyVecEnv of N RacingEnv
    model SAC | PPO | TD3 ("MlpPolicy"), network as the BC export when --init-from is given
    warm start: BC actor weights + small std (--init-from), demonstrations in the replay
          buffer (--demos), critic warm-up with the actor frozen (--critic-warmup steps),
          SAC/TD3: a BC loss on the demonstrations in every actor update (--bc-weight)
    learn: callbacks count *environment* steps (not vector steps):
          checkpoints (model + replay buffer, atomic, newest kept), evaluation on held-out
          tracks (best model kept), TensorBoard (--tensorboard), progress bar
    outputs: eval.json (RL vs BC vs expert on the same tracks), learning_curve.csv/.png,
          final_model.zip, best_model.zip, checkpoints/, config.resolved.yml, command.txt

A run killed at any moment (even SIGKILL) resumes with ``--resume`` from its newest
complete checkpoint: every file is written under a temporary name and renamed, and a
checkpoint only counts once its ``done`` marker exists.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from rlkit.envs.expert import Expert
from rlkit.envs.racing import RacingEnv
from rlkit.envs.sim import RacingConfig
from rlkit.envs.vec_env import RacingVecEnv
from rlkit.evaluate import EvalResult, evaluate, expert_driver, format_eval_table
from rlkit.policy import BCPolicy, build_policy_kwargs, load_bc_into, read_export_meta
from rlkit.rundir import RunDir, say
from rlkit.utils import (
    atomic_path,
    check_ranges,
    default_workers,
    from_json,
    resolve_device,
    trim_csv,
    write_json_atomic,
    write_text_atomic,
)

__all__ = ["RLConfig", "RLResult", "train_rl", "evaluate_model"]

logger = logging.getLogger(__name__)

ALGOS: dict[str, type[BaseAlgorithm]] = {"sac": SAC, "ppo": PPO, "td3": TD3}
BATCHED_CARS = 16  # default car count of --vec batched (bench/bench_rl.py)


@dataclass
class RLConfig:
    """Options of ``train_rl.py`` (section ``rl`` of config.yml)."""

    algo: Literal["sac", "ppo", "td3"] = field(
        default="ppo",
        metadata={"help": "SB3 algorithm (PPO: measured fastest to the expert, bench/bench_rl.py)"},
    )
    vec: Literal["batched", "subproc", "dummy"] = field(
        default="batched",
        metadata={"help": "batched: RacingVecEnv in one process; subproc/dummy: SB3 vec envs"},
    )
    envs: int | None = field(
        default=None,
        metadata={
            "help": "parallel envs (default: batched 16 cars; subproc/dummy: cores-1, min 2, cap 8)"
        },
    )
    timesteps: int = field(default=500_000, metadata={"help": "environment steps to train"})
    batch_size: int = field(default=256, metadata={"help": "SGD minibatch size"})
    lr: float = field(default=3e-4, metadata={"help": "learning rate"})
    gradient_steps: int | None = field(
        default=None,
        metadata={"help": "off-policy: gradient steps per update (default: one per env step)"},
    )
    train_freq: int = field(
        default=1, metadata={"help": "off-policy: update every this many vector steps"}
    )
    buffer_size: int = field(default=300_000, metadata={"help": "off-policy replay buffer size"})
    learning_starts: int | None = field(
        default=None,
        metadata={"help": "env steps before updates (default: 0 with --init-from, else 5000)"},
    )
    n_steps: int = field(default=256, metadata={"help": "PPO: steps per env per rollout"})
    critic_warmup: int = field(
        default=5000,
        metadata={"help": "with --init-from: env steps with the actor frozen while critics learn"},
    )
    init_from: str | None = field(
        default=None, metadata={"help": "train_bc.py output folder to warm-start the actor from"}
    )
    demos: str | None = field(
        default=None, metadata={"help": "LeRobot demonstrations to pre-fill the replay buffer"}
    )
    bc_weight: float = field(
        default=10.0,
        metadata={
            "help": "SAC/TD3 with --demos: weight of a BC loss on demo actions in every actor "
            "update (0: off)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed for envs, networks and evaluation"})
    output: str = field(default="runs/rl", metadata={"help": "output folder"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "device"})
    threads: int = field(
        default=1, metadata={"help": "torch CPU threads (1: measured fastest for these MLPs)"}
    )
    checkpoint_every: int = field(
        default=50_000, metadata={"help": "env steps between checkpoints (0: none)"}
    )
    eval_every: int = field(default=25_000, metadata={"help": "env steps between evaluations"})
    eval_episodes: int = field(default=20, metadata={"help": "held-out tracks per evaluation"})
    tensorboard: str | None = field(
        default=None, metadata={"help": "TensorBoard log folder (needs pip install tensorboard)"}
    )
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --output run"})
    eval_only: str | None = field(
        default=None, metadata={"help": "evaluate this saved model (.zip) and exit"}
    )
    video: str | None = field(
        default=None, metadata={"help": "write a top-down video of the policy (.gif or .mp4)"}
    )
    render: Literal["none", "human"] = field(
        default="none",
        metadata={
            "help": "human: watch the --eval-only episodes live in a window (needs pygame "
            "and a display)"
        },
    )
    max_episode_steps: int = field(default=1000, metadata={"help": "episode length in steps"})
    max_minutes: float | None = field(
        default=None,
        metadata={
            "help": "wall-clock budget: stop after this many minutes, then evaluate and save"
        },
    )

    def __post_init__(self) -> None:
        checks = [
            (self.envs is None or self.envs >= 1, f"envs must be >= 1, got {self.envs}"),
            (self.timesteps >= 1, f"timesteps must be >= 1, got {self.timesteps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.train_freq >= 1, f"train_freq must be >= 1, got {self.train_freq}"),
            (
                self.checkpoint_every >= 0,
                f"checkpoint_every must be >= 0, got {self.checkpoint_every}",
            ),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.eval_episodes >= 1, f"eval_episodes must be >= 1, got {self.eval_episodes}"),
            (self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            (self.critic_warmup >= 0, f"critic_warmup must be >= 0, got {self.critic_warmup}"),
            (not (self.resume and self.overwrite), "pass either --resume or --overwrite, not both"),
            (
                self.max_minutes is None or self.max_minutes > 0,
                f"max_minutes must be > 0, got {self.max_minutes}",
            ),
            (
                self.video is None or self.video.endswith((".gif", ".mp4")),
                f"video must end in .gif or .mp4, got {self.video!r}",
            ),
            (
                self.render == "none" or self.eval_only is not None,
                f"render {self.render!r} only works with --eval-only MODEL "
                "(training does not render); pass --eval-only or --render none",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        # upper bounds: a typo (1e20) is an error, not an allocation the kernel kills
        check_ranges(
            self,
            {
                "envs": (1, 4096),
                "timesteps": (1, 1e10),
                "batch_size": (1, 2**20),
                "lr": (1e-10, 1),
                "gradient_steps": (1, 1e6),
                "train_freq": (1, 1e6),
                "buffer_size": (1, 1e8),
                "learning_starts": (0, 1e10),
                "n_steps": (2, 1e6),
                "critic_warmup": (0, 1e10),
                "bc_weight": (0, 1e6),
                "seed": (0, 2**32 - 1),
                "threads": (1, 1024),
                "checkpoint_every": (0, 1e10),
                "eval_every": (0, 1e10),
                "eval_episodes": (1, 100_000),
                "max_episode_steps": (1, 1e6),
                "max_minutes": (1e-3, 1e6),
            },
        )

    @property
    def num_envs(self) -> int:
        if self.envs is not None:
            return self.envs
        # One process steps all cars as arrays, so the car count is not bound to the cores.
        return BATCHED_CARS if self.vec == "batched" else default_workers("rl")


# ------------------------------------------------------------------ environments
def make_vec_env(cfg: RLConfig, env_config: RacingConfig) -> VecEnv:
    """The training VecEnv; car/env ``i`` is seeded with ``seed + i``."""
    n = cfg.num_envs
    if cfg.vec == "batched":
        return RacingVecEnv(n, config=env_config, seed=cfg.seed)

    subproc = cfg.vec == "subproc"

    def make() -> Monitor:
        if subproc:
            # Ctrl-C reaches the whole process group: the trainer handles it and closes the
            # workers; a worker dying of it first would print its own traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return Monitor(RacingEnv(config=env_config))

    fns = [make] * n
    env = (
        SubprocVecEnv(fns, start_method="forkserver") if cfg.vec == "subproc" else DummyVecEnv(fns)
    )
    env.seed(cfg.seed)
    return env


# ------------------------------------------------------------------ checkpoints
def _atomic_save_model(model: BaseAlgorithm, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(str(tmp))


def _atomic_save_buffer(model: OffPolicyAlgorithm, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save_replay_buffer(str(tmp))


def newest_checkpoint(out: Path) -> Path | None:
    """The newest *complete* checkpoint folder (its ``done`` marker exists)."""
    root = out / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step_*") if (p / "done").is_file()]
    return max(done, key=lambda p: int(p.name.split("_")[1]), default=None)


def save_checkpoint(run: RunDir, model: BaseAlgorithm, clock: WallClock, keep: int = 2) -> Path:
    """Checkpoint ``model`` at its env step: model, replay buffer, then a ``done`` marker
    (with the run's wall time); older complete checkpoints go once this one is complete
    (the ``keep`` newest stay)."""
    steps = model.num_timesteps
    root = run.path / "checkpoints"
    folder = root / f"step_{steps}"
    if (folder / "done").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_save_model(model, folder / "model.zip")
    if isinstance(model, OffPolicyAlgorithm):
        _atomic_save_buffer(model, folder / "replay_buffer.pkl")
    algo = type(model).__name__.lower()
    write_text_atomic(
        folder / "done", json.dumps({"env_steps": steps, "algo": algo, "wall_s": clock.elapsed()})
    )
    run.saved = f"checkpoint at {steps:,} env steps"
    complete = sorted(
        (p for p in root.glob("step_*") if (p / "done").is_file()),
        key=lambda p: int(p.name.split("_")[1]),
    )
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


class CheckpointEvery(BaseCallback):
    """:func:`save_checkpoint` every ``every`` *environment* steps (checked when a rollout
    starts)."""

    def __init__(self, run: RunDir, every: int, clock: WallClock) -> None:
        super().__init__()
        self.run, self.every, self.clock = run, every, clock
        self.next_at = 0

    def _on_training_start(self) -> None:
        self.next_at = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        # A rollout starts after the previous rollout's update (SB3: collect_rollouts, then
        # train): weights, optimiser and replay buffer all hold every step counted so far.
        # (At a rollout's end the update of its steps has not happened yet: a checkpoint
        # there resumes without it.)
        if self.num_timesteps >= self.next_at:
            save_checkpoint(self.run, self.model, self.clock)
            while self.next_at <= self.num_timesteps:
                self.next_at += self.every


class EvalEvery(BaseCallback):
    """Evaluate the deterministic policy on held-out tracks every ``every`` env steps; log
    to TensorBoard and ``learning_curve.csv``; keep ``best_model.zip``."""

    def __init__(
        self,
        out: Path,
        every: int,
        env_config: RacingConfig,
        episodes: int,
        seed: int,
        clock: WallClock,
    ) -> None:
        super().__init__()
        self.out, self.every, self.env_config = out, every, env_config
        self.episodes, self.seed = episodes, seed
        self.clock = clock
        self.next_at = 0
        self.best = -math.inf
        self.curve = out / "learning_curve.csv"

    def _on_training_start(self) -> None:
        self.next_at = (
            (self.num_timesteps // self.every + 1) * self.every if self.num_timesteps else 0
        )
        if self.curve.is_file():
            rows = list(csv.DictReader(self.curve.open()))
            self.best = max((float(r["mean_return"]) for r in rows), default=-math.inf)
        if self.next_at == 0:
            self.run_eval()  # the starting point (BC or random)
            self.next_at = self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            self.run_eval()
            while self.next_at <= self.num_timesteps:
                self.next_at += self.every
        return True

    def run_eval(self) -> EvalResult:
        res = evaluate_model(self.model, self.env_config, self.episodes, self.seed)
        self.logger.record("eval/mean_return", res.mean_return)
        self.logger.record("eval/lap_rate", res.lap_rate)
        if not math.isnan(res.mean_lap_time):
            self.logger.record("eval/lap_time", res.mean_lap_time)
        self.logger.dump(step=self.num_timesteps)  # at this step, not at the next rollout end
        new = not self.curve.is_file()
        with self.curve.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(
                    ["env_steps", "wall_s", "mean_return", "lap_rate", "lap_time", "crash_rate"]
                )
            w.writerow(
                [
                    self.num_timesteps,
                    f"{self.clock.elapsed():.2f}",
                    f"{res.mean_return:.3f}",
                    f"{res.lap_rate:.4f}",
                    "" if math.isnan(res.mean_lap_time) else f"{res.mean_lap_time:.3f}",
                    f"{res.crash_rate:.4f}",
                ]
            )
        if res.mean_return > self.best:
            self.best = res.mean_return
            _atomic_save_model(self.model, self.out / "best_model.zip")
        return res


class CriticWarmup(BaseCallback):
    """Keep the actor frozen for the first ``steps`` env steps, so the randomly initialised
    critics (SAC/TD3) or value head (PPO) learn the BC policy's values before they steer it:
    the well-known collapse right after switching from BC to RL is the actor following a
    random critic. Frozen = ``requires_grad`` off (SB3 resets learning rates every update,
    so a zero learning rate would not stick); the optimiser skips parameters without grads.
    """

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.frozen = False

    def _actor_parameters(self) -> list[torch.nn.Parameter]:
        model = self.model
        if isinstance(model, PPO):
            pol = model.policy
            return [
                *pol.mlp_extractor.policy_net.parameters(),
                *pol.action_net.parameters(),
                pol.log_std,
            ]
        return list(model.actor.parameters())

    def _set(self, trainable: bool) -> None:
        for p in self._actor_parameters():
            p.requires_grad_(trainable)
        self.frozen = not trainable

    def _on_training_start(self) -> None:
        if self.num_timesteps < self.steps:
            self._set(False)

    def _on_step(self) -> bool:
        if self.frozen and self.num_timesteps >= self.steps:
            self._set(True)
            logger.info("critic warm-up done at %d env steps: actor unfrozen", self.num_timesteps)
        return True

    def _on_training_end(self) -> None:
        if self.frozen:
            self._set(True)  # saved models must be trainable


class BCRegulariser(BaseCallback):
    """Add ``weight * MSE(actor(s), a)`` on a batch of demonstration pairs to every SAC/TD3
    actor update (as TD3+BC), so a random critic cannot drag the policy away from the
    demonstrations before it has learned their values.

    The BC gradient is added in a step pre-hook of the actor's optimiser: SB3 has just
    back-propagated the actor loss into the same parameters, so the step applies
    ``actor_loss + weight * bc_loss``, without re-implementing SB3's ``train()``.
    """

    def __init__(self, obs: np.ndarray, actions: np.ndarray, weight: float, seed: int) -> None:
        super().__init__()
        self.obs, self.actions, self.weight = obs, actions, weight
        self.rng = np.random.default_rng(seed)
        self.handle: Any = None
        self.last_loss = float("nan")

    def _on_training_start(self) -> None:
        self.handle = self.model.actor.optimizer.register_step_pre_hook(self._add_bc_grad)

    def _on_training_end(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def _on_step(self) -> bool:
        return True

    def _add_bc_grad(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        actor = self.model.actor
        if not any(p.requires_grad for p in actor.parameters()):  # frozen (critic warm-up)
            return
        idx = self.rng.integers(0, len(self.obs), self.model.batch_size)
        obs = torch.as_tensor(self.obs[idx], device=self.model.device)
        target = torch.as_tensor(self.actions[idx], device=self.model.device)
        with torch.enable_grad():
            pred = actor(obs, deterministic=True) if isinstance(self.model, SAC) else actor(obs)
            loss = self.weight * torch.nn.functional.mse_loss(pred, target)
            loss.backward()
        self.last_loss = float(loss.detach())


class WallClock:
    """Wall time of a run across resumes: ``elapsed()`` continues from ``offset`` seconds
    (the time recorded in the checkpoint a run resumed from)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.t0 = time.perf_counter() - offset

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


class ProgressBar(BaseCallback):
    """A tqdm bar of environment steps that ends at its total (SB3's own bar counts every
    step of the last rollout past it: "503,808/500,000")."""

    def __init__(self, start: int, total: int) -> None:
        super().__init__()
        self.start, self.total = start, total
        self.bar: Any = None

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.total, initial=self.start, desc="rl", unit="step", dynamic_ncols=True
        )

    def _on_step(self) -> bool:
        self.bar.update(max(0, min(self.num_timesteps, self.total) - self.bar.n))
        return True


class WallClockLimit(BaseCallback):
    """Stop ``learn`` once ``seconds`` of wall time have passed since ``t0``."""

    def __init__(self, t0: float, seconds: float) -> None:
        super().__init__()
        self.deadline = t0 + seconds

    def _on_step(self) -> bool:
        return time.perf_counter() < self.deadline


# ------------------------------------------------------------------ evaluation
def model_driver(model: BaseAlgorithm):
    return lambda obs, sim: model.predict(obs, deterministic=True)[0]


def evaluate_model(
    model: BaseAlgorithm, env_config: RacingConfig, episodes: int, seed: int
) -> EvalResult:
    return evaluate(model_driver(model), env_config, episodes, seed)


# ------------------------------------------------------------------ training
@dataclass
class RLResult:
    output: Path
    timesteps: int
    wall_s: float
    steps_per_s: float
    eval: dict[str, EvalResult] = field(default_factory=dict)


def _build_model(
    cfg: RLConfig, env: VecEnv, bc_meta: dict[str, Any] | None, device: str
) -> BaseAlgorithm:
    cls = ALGOS[cfg.algo]
    kwargs: dict[str, Any] = {
        "learning_rate": cfg.lr,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "device": device,
        "verbose": 0,
        "tensorboard_log": cfg.tensorboard,
    }
    if bc_meta is not None:
        kwargs["policy_kwargs"] = build_policy_kwargs(bc_meta["policy_kwargs"][cfg.algo])
    if cfg.algo in ("sac", "td3"):
        n = env.num_envs
        kwargs.update(
            buffer_size=cfg.buffer_size,
            train_freq=cfg.train_freq,
            # With N envs SB3 collects N transitions per vector step: keep one gradient step
            # per transition unless told otherwise (an explicit update-to-data ratio).
            gradient_steps=cfg.gradient_steps or n * cfg.train_freq,
            learning_starts=cfg.learning_starts
            if cfg.learning_starts is not None
            else (0 if bc_meta else 5000),
        )
        if cfg.algo == "sac" and bc_meta is not None:
            # Start from the BC policy's small std; let the entropy coefficient adapt from low.
            kwargs["ent_coef"] = "auto_0.01"
        if cfg.algo == "td3":
            kwargs["action_noise"] = NormalActionNoise(np.zeros(2), 0.1 * np.ones(2))
    else:
        kwargs.update(n_steps=cfg.n_steps, batch_size=cfg.batch_size)
    return cls("MlpPolicy", env, **kwargs)


def _load_demos(demos: str, model: BaseAlgorithm, extra: list[str]) -> dict[str, np.ndarray]:
    """State, action (and ``extra``) columns of a LeRobot dataset, checked against the env."""
    from rlkit.lerobot import LeRobotDataset

    cols = LeRobotDataset(demos).load_columns(["observation.state", "action", *extra])
    obs, act = cols["observation.state"], cols["action"]
    if obs.shape[1] != model.observation_space.shape[0] or act.shape[1] != 2:
        raise ValueError(
            f"--demos {demos}: observations of size {obs.shape[1]} and actions of size "
            f"{act.shape[1]} do not match the env ({model.observation_space.shape[0]}, 2)"
        )
    return cols


def _prefill_demos(model: OffPolicyAlgorithm, demos: str, env_config: RacingConfig) -> int:
    """Write the demonstration transitions into the replay buffer; returns how many.

    SB3's buffer stores ``(position, env)`` slots; the transitions fill whole positions
    (``n_envs`` at a time) in one vectorised copy. The last frame of an episode that left the
    track is terminal (its next observation is irrelevant). The last frame of an episode cut
    by the time limit is dropped: its next observation was never recorded, and bootstrapping
    from a wrong one would bias the critic.
    """
    from rlkit.collect import load_env_config

    cols = _load_demos(demos, model, ["next.reward", "episode_index"])
    obs, act = cols["observation.state"], cols["action"]
    horizon = (load_env_config(demos) or env_config).max_episode_steps
    ep = cols["episode_index"]
    last = np.append(ep[1:] != ep[:-1], True)
    lengths = np.unique(ep, return_counts=True)[1]
    ep_len = np.repeat(lengths, lengths)  # LeRobot stores episodes contiguously, in order
    keep = ~(last & (ep_len >= horizon))
    next_obs = np.concatenate([obs[1:], obs[-1:]])[keep]
    obs, act, rew, last = obs[keep], act[keep], cols["next.reward"][keep], last[keep]
    buf = model.replay_buffer
    n_envs = buf.n_envs
    k = min(len(obs) // n_envs, buf.buffer_size - 1)
    m = k * n_envs

    def grid(x: np.ndarray) -> np.ndarray:
        return x[:m].reshape(k, n_envs, *x.shape[1:])

    buf.observations[:k] = grid(obs)
    buf.next_observations[:k] = grid(next_obs)
    buf.actions[:k] = grid(act)
    buf.rewards[:k] = grid(rew)
    buf.dones[:k] = grid(last.astype(np.float32))
    buf.timeouts[:k] = 0.0
    buf.pos, buf.full = k, False
    return m


def _env_config(cfg: RLConfig, bc_meta: dict[str, Any] | None) -> RacingConfig:
    if bc_meta is not None and bc_meta.get("env_config"):
        base = RacingConfig.from_dict(bc_meta["env_config"])
    else:
        base = RacingConfig()
    import dataclasses

    return dataclasses.replace(base, max_episode_steps=cfg.max_episode_steps)


def _finite(model: BaseAlgorithm) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.policy.parameters())


def _has_checkpoint(out: Path) -> bool:
    return newest_checkpoint(out) is not None


def train_rl(cfg: RLConfig, *, argv: list[str] | None = None, progress: bool = True) -> RLResult:
    """Train (or resume) an SB3 agent; see the module docstring for the outputs."""
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError as e:
            raise ImportError("--tensorboard needs TensorBoard: pip install tensorboard") from e
    bc_meta = read_export_meta(cfg.init_from) if cfg.init_from else None
    env_config = _env_config(cfg, bc_meta)
    device = str(resolve_device(cfg.device))
    run = RunDir(
        cfg.output, "rl", resume=cfg.resume, overwrite=cfg.overwrite, has_checkpoint=_has_checkpoint
    )
    with run:
        done = run.start(cfg, section="rl", argv=argv)
        if done is not None:
            return from_json(RLResult, done)
        return _train(cfg, run, env_config, bc_meta, device, progress)


def _train(
    cfg: RLConfig,
    run: RunDir,
    env_config: RacingConfig,
    bc_meta: dict[str, Any] | None,
    device: str,
    progress: bool,
) -> RLResult:
    out = run.path
    torch.set_num_threads(cfg.threads)
    env = make_vec_env(cfg, env_config)
    try:
        ckpt = newest_checkpoint(out) if run.resuming else None
        clock = WallClock()
        if ckpt is not None:
            done = json.loads((ckpt / "done").read_text())
            if done["algo"] != cfg.algo:
                raise ValueError(
                    f"{ckpt}: checkpoint made by {done['algo'].upper()}, not {cfg.algo.upper()}; "
                    f"resume with --algo {done['algo']} or start a new --output"
                )
            kept = trim_csv(out / "learning_curve.csv", lambda r: int(r[0]) <= done["env_steps"])
            clock = WallClock(done.get("wall_s", 0.0))
            model = ALGOS[cfg.algo].load(str(ckpt / "model.zip"), env=env, device=device)
            if isinstance(model, OffPolicyAlgorithm) and (ckpt / "replay_buffer.pkl").is_file():
                model.load_replay_buffer(str(ckpt / "replay_buffer.pkl"))
            run.saved = f"checkpoint at {model.num_timesteps:,} env steps"
            say(
                f"resuming {out} at {model.num_timesteps:,} env steps ({ckpt.name}); "
                f"learning_curve.csv keeps {kept} evaluations"
            )
        else:
            model = _build_model(cfg, env, bc_meta, device)
            if cfg.init_from:
                load_bc_into(model, cfg.init_from)
            if cfg.demos and isinstance(model, OffPolicyAlgorithm):
                logger.info(
                    "replay buffer pre-filled with %d demo transitions",
                    _prefill_demos(model, cfg.demos, env_config),
                )
        start_steps = model.num_timesteps
        t0 = time.perf_counter()
        remaining = max(0, cfg.timesteps - start_steps)
        if remaining:
            callbacks: list[BaseCallback] = [
                EvalEvery(
                    out,
                    cfg.eval_every or cfg.timesteps,
                    env_config,
                    cfg.eval_episodes,
                    cfg.seed,
                    clock,
                )
            ]
            if cfg.checkpoint_every:
                callbacks.append(CheckpointEvery(run, cfg.checkpoint_every, clock))
            if cfg.max_minutes:
                callbacks.append(WallClockLimit(t0, cfg.max_minutes * 60))
            if cfg.init_from and cfg.critic_warmup:
                callbacks.append(CriticWarmup(cfg.critic_warmup))
            if cfg.demos and cfg.bc_weight > 0 and isinstance(model, OffPolicyAlgorithm):
                demo = _load_demos(cfg.demos, model, [])
                callbacks.append(
                    BCRegulariser(
                        demo["observation.state"], demo["action"], cfg.bc_weight, cfg.seed
                    )
                )
            bar = ProgressBar(start_steps, cfg.timesteps)
            if progress:
                callbacks.append(bar)
            try:
                model.learn(
                    total_timesteps=remaining,
                    callback=callbacks,
                    reset_num_timesteps=ckpt is None,
                    tb_log_name=cfg.algo,
                )
            except ValueError as e:  # torch's distributions reject NaN parameters
                if _finite(model):
                    raise
                raise ValueError(
                    f"training diverged near {model.num_timesteps:,} env steps: the policy's "
                    f"weights are not finite; lower --lr (now {cfg.lr}); the last checkpoint "
                    "is kept"
                ) from e
            finally:
                if bar.bar is not None:  # SB3 skips _on_training_end when learn() raises
                    bar.bar.close()
            if not _finite(model):
                raise ValueError(
                    f"training diverged: the policy's weights are not finite after "
                    f"{model.num_timesteps:,} env steps; lower --lr (now {cfg.lr})"
                )
            if cfg.checkpoint_every:
                # the final state: a kill while the outputs below are written resumes here
                save_checkpoint(run, model, clock)
        wall = time.perf_counter() - t0
        _atomic_save_model(model, out / "final_model.zip")
    finally:
        env.close()
    result = RLResult(
        out, int(model.num_timesteps), wall, (model.num_timesteps - start_steps) / max(wall, 1e-9)
    )
    result.eval = compare(model, env_config, cfg, out)
    write_learning_curve_png(out, result.eval)
    if cfg.video:
        write_video(model, env_config, cfg.video, cfg.seed)
    run.finish(result, summary_text(result), complete=model.num_timesteps >= cfg.timesteps)
    return result


def compare(
    model: BaseAlgorithm, env_config: RacingConfig, cfg: RLConfig, out: Path
) -> dict[str, EvalResult]:
    """RL (best model), BC and the expert on the same held-out tracks -> eval.json."""
    best_path = out / "best_model.zip"
    best = ALGOS[cfg.algo].load(str(best_path), device="cpu") if best_path.is_file() else model
    rows = {"rl": evaluate_model(best, env_config, cfg.eval_episodes, cfg.seed)}
    if cfg.init_from:
        policy = BCPolicy.load(Path(cfg.init_from) / "bc_policy.pt")
        rows["bc"] = evaluate(
            lambda obs, sim: policy.act(obs), env_config, cfg.eval_episodes, cfg.seed
        )
    rows["expert"] = evaluate(expert_driver(Expert()), env_config, cfg.eval_episodes, cfg.seed)
    payload = {
        "episodes": cfg.eval_episodes,
        "seed": cfg.seed,
        **{k: v.to_dict() for k, v in rows.items()},
    }
    write_json_atomic(out / "eval.json", payload)
    return rows


def write_learning_curve_png(out: Path, rows: dict[str, EvalResult]) -> None:
    """Eval return vs env steps and vs wall time, expert and BC as horizontal lines."""
    curve = out / "learning_curve.csv"
    if not curve.is_file():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = list(csv.DictReader(curve.open()))
    steps = [int(r["env_steps"]) for r in data]
    wall = [float(r["wall_s"]) / 60 for r in data]
    ret = [float(r["mean_return"]) for r in data]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, x, label in ((axes[0], steps, "environment steps"), (axes[1], wall, "wall time (min)")):
        ax.plot(x, ret, marker="o", label="RL (eval)")
        for name, style in (("expert", "--"), ("bc", ":")):
            if name in rows:
                ax.axhline(
                    rows[name].mean_return,
                    linestyle=style,
                    color="gray" if name == "expert" else "tab:green",
                    label=name,
                )
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean return on held-out tracks")
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(out / "learning_curve.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_video(
    model: BaseAlgorithm, env_config: RacingConfig, path: str, seed: int, size: int = 256
) -> Path:
    """Render the deterministic policy driving one held-out track, top-down."""
    from gymnasium.utils import seeding

    from rlkit.envs.render import render_frame
    from rlkit.envs.sim import RacingSim
    from rlkit.utils import episode_seed

    sim = RacingSim(1, env_config)
    sim.reset_car(0, seeding.np_random(episode_seed(seed, 0, "eval"))[0])
    frames = [render_frame(sim, 0, size)]
    for _ in range(env_config.max_episode_steps):
        action, _ = model.predict(sim.observe(), deterministic=True)
        _, term, trunc, _ = sim.step(action)
        frames.append(render_frame(sim, 0, size))
        if term[0] or trunc[0] or sim.laps[0] >= 1:
            break
    return save_video(frames, Path(path), fps=round(1 / env_config.dt))


def save_video(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    if path.suffix != ".gif":
        try:
            import av
        except ImportError as e:
            raise ImportError("--video .mp4 needs PyAV: pip install av (or use a .gif)") from e
    with atomic_path(path) as tmp:
        if path.suffix == ".gif":
            from PIL import Image

            images = [Image.fromarray(f) for f in frames[::2]]  # 10 fps keeps the GIF small
            images[0].save(
                tmp, save_all=True, append_images=images[1:], duration=int(2000 / fps), loop=0
            )
        else:
            with av.open(str(tmp), mode="w") as container:
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
                stream.pix_fmt = "yuv420p"
                for f in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
    return path


def eval_only(cfg: RLConfig) -> dict[str, EvalResult]:
    """``--eval-only MODEL``: evaluate a saved model (algorithm from --algo).

    With ``--render human`` the policy first drives the ``--eval-episodes`` evaluation
    tracks live in a pygame window, in real time (the same tracks and start states as the
    table: episode i is ``RacingEnv`` seeded with ``episode_seed(seed, i, "eval")``, like car
    i of :func:`~rlkit.evaluate.evaluate`). Closing the window skips to the table.
    """
    path = Path(cfg.eval_only or "")
    if not path.is_file():
        raise FileNotFoundError(f"--eval-only {path}: no such model file")
    bc_meta = read_export_meta(cfg.init_from) if cfg.init_from else None
    env_config = _env_config(cfg, bc_meta)
    try:
        model = ALGOS[cfg.algo].load(str(path), device="cpu")
    except Exception as e:  # SB3 raises many kinds for a wrong/corrupt file
        raise ValueError(
            f"{path}: not a saved {cfg.algo.upper()} model ({type(e).__name__}: {e}); "
            "pass the matching --algo"
        ) from e
    if cfg.render == "human":
        from rlkit.utils import episode_seed

        env = RacingEnv(render_mode="human", config=env_config)
        try:
            for i in range(cfg.eval_episodes):
                obs, _ = env.reset(seed=episode_seed(cfg.seed, i, "eval"))  # opens the window
                done = False
                while not done and env.window is not None and env.window.is_open:
                    action, _ = model.predict(obs, deterministic=True)
                    obs, _, terminated, truncated, _ = env.step(action)
                    done = terminated or truncated
                if env.window is None or not env.window.is_open:
                    break  # the user closed the window
        finally:
            env.close()
    rows = {"rl": evaluate_model(model, env_config, cfg.eval_episodes, cfg.seed)}
    rows["expert"] = evaluate(expert_driver(Expert()), env_config, cfg.eval_episodes, cfg.seed)
    if cfg.video:
        write_video(model, env_config, cfg.video, cfg.seed)
    return rows


def summary_text(result: RLResult) -> str:
    lines = [
        f"  output          {result.output}",
        f"  env steps       {result.timesteps:,}  "
        f"({result.steps_per_s:,.0f} env-steps/s, {result.wall_s:.1f} s)",
        "",
        format_eval_table(result.eval),
    ]
    return "\n".join(lines)
