"""Stable-Baselines3 callbacks of ``train_rl.py`` and the checkpoints they write.

Every callback counts *environment* steps (``num_timesteps``), not vector steps. A checkpoint
folder ``checkpoints/step_N/`` holds ``model.zip`` (and ``replay_buffer.pkl`` off-policy); it
counts only once its ``done`` marker exists, so a run killed mid-write resumes from the one
before.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from rlkit.envs.sim import RacingConfig
from rlkit.progress import progress
from rlkit.rollout import EvalResult, evaluate, model_driver
from rlkit.rundir import RunDir
from rlkit.utils import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

#: The policy with the best mean return on the validation tracks so far.
BEST_MODEL = "best_model.zip"


# ------------------------------------------------------------------ checkpoints
class WallClock:
    """Wall time of a run across resumes: ``elapsed()`` continues from ``offset`` seconds
    (the time recorded in the checkpoint a run resumed from)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.t0 = time.perf_counter() - offset

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def save_model_atomic(model: BaseAlgorithm, path: Path) -> None:
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


def save_checkpoint(
    run: RunDir, model: BaseAlgorithm, clock: WallClock, settings: dict[str, Any], keep: int = 2
) -> Path:
    """Checkpoint ``model`` at its env step: model, replay buffer, the best model selected so
    far, then a ``done`` marker (with the run's wall time and the training ``settings`` SB3
    does not save, which a resume must repeat); older complete checkpoints go once this one is
    complete (the ``keep`` newest stay)."""
    steps = model.num_timesteps
    root = run.path / "checkpoints"
    folder = root / f"step_{steps}"
    if (folder / "done").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    save_model_atomic(model, folder / "model.zip")
    if isinstance(model, OffPolicyAlgorithm):
        _atomic_save_buffer(model, folder / "replay_buffer.pkl")
    best = run.path / BEST_MODEL
    if best.is_file():  # a resume restores it: a later best would be from lost training
        with atomic_path(folder / BEST_MODEL) as tmp:
            shutil.copyfile(best, tmp)
    algo = type(model).__name__.lower()
    done = {"env_steps": steps, "algo": algo, "wall_s": clock.elapsed(), "settings": settings}
    with run.saving(f"checkpoint at {steps:,} env steps", folder / "done"):
        write_text_atomic(folder / "done", json.dumps(done))
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

    def __init__(self, run: RunDir, every: int, clock: WallClock, settings: dict[str, Any]) -> None:
        super().__init__()
        self.run, self.every, self.clock, self.settings = run, every, clock, settings
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
            save_checkpoint(self.run, self.model, self.clock, self.settings)
            while self.next_at <= self.num_timesteps:
                self.next_at += self.every


def restore_best(run: RunDir, checkpoint: Path) -> None:
    """Put back the best model of ``checkpoint`` (none: remove the run's): a best model
    selected after the checkpoint came from training that the resume repeats."""
    saved, best = checkpoint / BEST_MODEL, run.path / BEST_MODEL
    if saved.is_file():
        with atomic_path(best) as tmp:
            shutil.copyfile(saved, tmp)
    else:
        best.unlink(missing_ok=True)


def evaluate_model(
    model: BaseAlgorithm,
    env_config: RacingConfig,
    episodes: int,
    seed: int,
    stream: str = "val",
) -> EvalResult:
    """The deterministic policy of ``model`` on ``episodes`` tracks of ``stream``."""
    return evaluate(model_driver(model), env_config, episodes, seed, stream=stream)


class EvalEvery(BaseCallback):
    """Evaluate the deterministic policy on the validation tracks (stream ``val``) every
    ``every`` env steps; log to TensorBoard and ``learning_curve.csv``; keep the best as
    ``best_model.zip`` (the selected policy; the final report uses the ``test`` tracks)."""

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
        self.last: EvalResult | None = None  # the newest evaluation
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
        self.last = res
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
            save_model_atomic(self.model, self.out / BEST_MODEL)
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


class StdSchedule(BaseCallback):
    """PPO's action std as a schedule instead of a learned parameter: ``start`` at step 0
    to ``end`` at ``total`` env steps, linearly, set when each rollout starts (from the env
    step, so a resumed run continues the same schedule).

    Why: the policy is evaluated and deployed deterministically (its mean action), but PPO
    trains the stochastic policy. With a learned std that stays ~0.2, the mean of a policy
    that drives well under noise can crash (measured: 85 % of the validation tracks off track
    for the mean action, 15 % for sampled actions of the same checkpoint). Annealing the std
    towards a small value makes the policy that is trained, late in training, the one that is
    evaluated (as DrQ-v2's exploration std schedule).
    """

    def __init__(self, start: float, end: float, total: int) -> None:
        super().__init__()
        self.start, self.end, self.total = start, end, total

    def std_at(self, steps: int) -> float:
        frac = min(1.0, steps / self.total)
        return self.start + frac * (self.end - self.start)

    def _on_training_start(self) -> None:
        self._on_rollout_start()

    def _on_rollout_start(self) -> None:
        log_std = self.model.policy.log_std
        log_std.requires_grad_(False)  # not learned (also after the critic warm-up)
        with torch.no_grad():
            log_std.fill_(math.log(self.std_at(self.num_timesteps)))

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.model.policy.log_std.requires_grad_(True)  # saved models stay trainable


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


class ProgressBar(BaseCallback):
    """Progress in environment steps (:func:`rlkit.progress.progress`: a tqdm bar on a
    terminal, a line every 10 s in a log) with the last validation return; it ends at its
    total (SB3's own bar counts every step of the last rollout past it: "503,808/500,000")."""

    def __init__(self, start: int, total: int, evaluator: EvalEvery | None = None) -> None:
        super().__init__()
        self.start, self.total, self.evaluator = start, total, evaluator
        self.bar: Any = None
        self._shown: EvalResult | None = None

    def _on_training_start(self) -> None:
        self.bar = progress(self.total, "rl", "step", initial=self.start)

    def _on_step(self) -> bool:
        last = self.evaluator.last if self.evaluator is not None else None
        if last is not None and last is not self._shown:
            self._shown = last
            self.bar.set_postfix(val_return=f"{last.mean_return:.1f}", refresh=False)
        self.bar.update(max(0, min(self.num_timesteps, self.total) - self.bar.n))
        return True


class WallClockLimit(BaseCallback):
    """Stop ``learn`` once ``seconds`` of wall time have passed since ``t0``."""

    def __init__(self, t0: float, seconds: float) -> None:
        super().__init__()
        self.deadline = t0 + seconds

    def _on_step(self) -> bool:
        return time.perf_counter() < self.deadline
