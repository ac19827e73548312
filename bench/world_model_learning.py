"""What a world-model run learned, for ``bench_world_model.py --learning-run`` and ``--seeds``.

Every run is evaluated on the same evaluation episodes -- ``episode_seed(0, 1000 + j,
"test")`` for j < n, whatever the run's own seed -- so seeds and baselines are compared on
the same starts (pendulum) or the same held-out tracks (racing):

- the planner with the run's newest checkpoint (no exploration noise), as in training;
- the random policy (uniform actions);
- pendulum: the same planner on gymnasium's true dynamics (the "perfect model");
- racing: the expert (at every control step, from the state) and, with a BC policy, the BC
  policy from the state; their laps come from the same tracks (``rlkit.rollout.evaluate``
  drives the track of ``episode_seed(0, 1000 + j, "test")`` as the pixel env does).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from rlkit.planet.config import WorldModelConfig
from rlkit.planet.envs import PixelEnv
from rlkit.planet.episodes import make_planner, planning_threads, run_episode
from rlkit.planet.model import WorldModel
from rlkit.planet.planner import CEMPlanner
from rlkit.planet.train import load_newest_checkpoint
from rlkit.utils import episode_seed

__all__ = [
    "EVAL_OFFSET",
    "baselines",
    "eval_seeds",
    "evaluate_run",
    "learning_curve",
    "pendulum_truth",
    "run_config",
]

#: Evaluation episode j of every run is ``episode_seed(0, EVAL_OFFSET + j, "test")``.
EVAL_OFFSET = 1000


def eval_seeds(n: int) -> list[int]:
    """The env seeds of the ``n`` evaluation episodes (the same for every run)."""
    return [episode_seed(0, EVAL_OFFSET + j, "test") for j in range(n)]


def run_config(run: Path) -> WorldModelConfig:
    """The settings a ``train_world_model.py`` run used (its ``config.resolved.yml``)."""
    path = run / "config.resolved.yml"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; is {run} a train_world_model.py run folder?")
    settings = yaml.safe_load(path.read_text())["world_model"]
    settings.setdefault("dashboard", False)  # a run from before the option drew none
    return WorldModelConfig(**settings)


def _is_racing(env: PixelEnv) -> bool:
    return getattr(env, "name", "") == "racing"


def _episodes(env: PixelEnv, seeds: list[int], act: Any) -> dict[str, Any]:
    """Run one episode per seed with ``act(seed) -> (model, planner) | None`` (None: random)."""
    returns, laps = [], []
    for s in seeds:
        model_planner = act(s)
        ep = run_episode(env, s) if model_planner is None else run_episode(env, s, *model_planner)
        returns.append(ep.ret)
        laps.append(env.info.get("laps"))  # racing: laps driven when the episode ended
    out: dict[str, Any] = {"returns": returns, "mean": float(np.mean(returns))}
    if _is_racing(env):
        out["laps"] = laps
        out["lap_rate"] = float(np.mean([lp >= 1.0 for lp in laps]))
    return out


def evaluate_run(run: Path, episodes: int, checkpoint: str | None = None) -> dict[str, Any]:
    """The planner with ``checkpoint`` (default: the newest) of ``run`` on the evaluation
    episodes; the checkpoint's iteration, step and age (file time minus the run's start)."""
    cfg = run_config(run)
    cpu = torch.device("cpu")
    env = cfg.make_env()
    if checkpoint is None:
        found = load_newest_checkpoint(run, cpu)
        if found is None:
            raise SystemExit(f"{run}: no checkpoint")
        path, blob = found
    else:
        path = run / "checkpoints" / checkpoint
        if not path.is_file():
            raise SystemExit(f"{path}: no such checkpoint")
        blob = torch.load(path, map_location=cpu, weights_only=False)
    model = WorldModel(env.action_dim, cfg.sizes(cpu), bf16_convs=cfg.bf16_convs(cpu))
    model.load_state_dict(blob["model"])
    model.eval()
    started = (run / "config.resolved.yml").stat().st_mtime
    with planning_threads(cpu):
        torch.manual_seed(0)
        planner = _episodes(
            env, eval_seeds(episodes), lambda s: (model, make_planner(model, cfg.planner(cpu), s))
        )
    env.close()
    return {
        "run": str(run),
        "checkpoint": path.name,
        "iteration": blob["iteration"],
        "train_step": blob.get("train_step"),
        "checkpoint_minutes_after_start": (path.stat().st_mtime - started) / 60,
        "planner": planner,
    }


def pendulum_truth(action_repeat: int) -> tuple[Any, Any]:
    """Gymnasium's Pendulum-v1 dynamics, batched in torch: the 'perfect model'.

    State (N, 3): angle, angular velocity, reward of the last (repeated) action."""

    def transition(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        th, thdot = state[:, 0], state[:, 1]
        u = 2.0 * action[:, 0].clamp(-1, 1)
        total = torch.zeros_like(th)
        for _ in range(action_repeat):
            norm = (th + np.pi) % (2 * np.pi) - np.pi
            total -= norm**2 + 0.1 * thdot**2 + 0.001 * u**2
            thdot = (thdot + (3 * 10.0 / 2 * torch.sin(th) + 3.0 * u) * 0.05).clamp(-8, 8)
            th = th + thdot * 0.05
        return torch.stack([th, thdot, total], dim=1)

    return transition, lambda state: state[:, 2]


def _perfect_pendulum(cfg: WorldModelConfig, seeds: list[int]) -> dict[str, Any]:
    env = cfg.make_env()
    transition, reward = pendulum_truth(cfg.action_repeat)
    returns = []
    for s in seeds:
        env.reset(seed=s)
        planner = CEMPlanner(
            transition,
            reward,
            1,
            cfg.planner(torch.device("cpu")),
            torch.Generator().manual_seed(s),
        )
        total, done = 0.0, False
        while not done:
            th, thdot = env.env.unwrapped.state
            state = torch.tensor([[th, thdot, 0.0]], dtype=torch.float32)
            _, r, term, trunc = env.step(planner.plan(state).numpy())
            total, done = total + r, term or trunc
        returns.append(total)
    env.close()
    return {"returns": returns, "mean": float(np.mean(returns))}


def _racing_reference(
    cfg: WorldModelConfig, episodes: int, bc_policy: Path | None
) -> dict[str, dict[str, Any]]:
    """The expert (and a BC policy) from the state on the evaluation tracks, at every control
    step (no action repeat): the reference the pixel planner is measured against."""
    from rlkit.envs.sim import RacingConfig
    from rlkit.rollout import expert_driver, policy_driver, rollout

    overrides = (
        {} if cfg.max_episode_steps is None else {"max_episode_steps": cfg.max_episode_steps}
    )
    drivers = {"expert": expert_driver()}
    if bc_policy is not None:
        from rlkit.policy import load_policy

        drivers["bc"] = policy_driver(load_policy(bc_policy))
    out = {}
    for name, driver in drivers.items():
        # the tracks of episode_seed(0, EVAL_OFFSET + j, "test"), as eval_seeds gives the pixel env
        r = rollout(
            driver, RacingConfig(**overrides), 0, range(EVAL_OFFSET, EVAL_OFFSET + episodes)
        )
        out[name] = {
            "returns": r.returns.tolist(),
            "mean": float(r.returns.mean()),
            "laps": r.laps.tolist(),
            "lap_rate": float(np.mean(r.laps >= 1.0)),
        }
    return out


def baselines(cfg: WorldModelConfig, episodes: int, bc_policy: Path | None = None) -> dict:
    """The random policy and the reference of the env on the evaluation episodes."""
    seeds = eval_seeds(episodes)
    env = cfg.make_env()
    out: dict[str, Any] = {"random": _episodes(env, seeds, lambda s: None)}
    env.close()
    if cfg.env == "pendulum":
        with planning_threads(torch.device("cpu")):
            out["perfect_model"] = _perfect_pendulum(cfg, seeds)
    elif cfg.env == "racing":
        out.update(_racing_reference(cfg, episodes, bc_policy))
    return out


def learning_curve(run: Path) -> list[dict[str, Any]]:
    """Per iteration: gradient steps, wall minutes, reconstruction loss, collection return."""
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    wall = np.cumsum([float(r["train_s"]) + float(r["collect_s"]) for r in rows])
    return [
        {"iteration": int(r["iteration"]), "train_step": int(r["train_step"]),
         "minutes": w / 60, "obs_loss": float(r["obs_loss"]),
         "train_return": float(r["train_return"])}
        for r, w in zip(rows, wall, strict=True)
    ]  # fmt: skip
