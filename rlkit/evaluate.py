"""Evaluate a driver on held-out tracks, many cars at once.

Episode ``i`` of an evaluation uses the seed ``episode_seed(seed, i, "eval")`` -- a stream
disjoint from the demonstration seeds -- so a policy, the expert and an RL agent evaluated
with the same ``seed`` drive exactly the same tracks from the same start states.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from gymnasium.utils import seeding

from rlkit.envs.expert import Expert
from rlkit.envs.sim import RacingConfig, RacingSim
from rlkit.utils import episode_seed

__all__ = ["EvalResult", "evaluate", "expert_driver", "format_eval_table"]

#: A driver maps the observations of N cars (and the simulator, for state-based drivers
#: such as the expert) to N actions.
Driver = Callable[[np.ndarray, RacingSim], np.ndarray]


@dataclass
class EvalResult:
    """Mean return, lap completion and lap time over the evaluation episodes."""

    episodes: int
    mean_return: float
    std_return: float
    lap_rate: float  # fraction of episodes that completed a lap
    crash_rate: float  # fraction of episodes that left the track
    mean_lap_time: float  # first lap, seconds, over the episodes that completed one (NaN if none)
    mean_laps: float

    def to_dict(self) -> dict[str, float]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def expert_driver(expert: Expert | None = None) -> Driver:
    expert = expert or Expert()
    return lambda obs, sim: expert.act_sim(sim)


def evaluate(
    driver: Driver,
    env_config: RacingConfig,
    episodes: int,
    seed: int = 0,
    batch: int = 64,
    stream: str = "eval",
) -> EvalResult:
    """Drive ``episodes`` held-out tracks with ``driver``, ``batch`` cars at a time."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    returns, laps, first, crashed = [], [], [], []
    for lo in range(0, episodes, batch):
        idx = list(range(lo, min(lo + batch, episodes)))
        n = len(idx)
        sim = RacingSim(n, env_config)
        for k, i in enumerate(idx):
            sim.reset_car(k, seeding.np_random(episode_seed(seed, i, stream))[0])
        ret = np.zeros(n)
        alive = np.ones(n, dtype=bool)
        ep_laps = np.zeros(n)
        ep_first = np.full(n, np.nan)
        ep_crash = np.zeros(n, dtype=bool)
        for _ in range(env_config.max_episode_steps):
            reward, term, trunc, _ = sim.step(driver(sim.observe(), sim))
            ret += np.where(alive, reward, 0.0)
            ended = alive & (term | trunc)
            ep_laps[ended] = sim.progress[ended] / sim.t_len[ended]
            ep_first[ended] = sim.first_lap_time[ended]
            ep_crash |= ended & term
            alive &= ~ended
            if not alive.any():
                break
        returns.append(ret)
        laps.append(ep_laps)
        first.append(ep_first)
        crashed.append(ep_crash)
    r, lp, fl, cr = (np.concatenate(x) for x in (returns, laps, first, crashed))
    done = ~np.isnan(fl)
    return EvalResult(
        episodes=episodes,
        mean_return=float(r.mean()),
        std_return=float(r.std()),
        lap_rate=float(done.mean()),
        crash_rate=float(cr.mean()),
        mean_lap_time=float(fl[done].mean()) if done.any() else math.nan,
        mean_laps=float(lp.mean()),
    )


def format_eval_table(rows: dict[str, EvalResult]) -> str:
    """A small aligned table: one row per driver."""
    head = f"{'driver':<10} {'return':>9} {'laps done':>10} {'lap time':>9} {'off track':>10}"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lap = "-" if math.isnan(r.mean_lap_time) else f"{r.mean_lap_time:.2f}s"
        lines.append(
            f"{name:<10} {r.mean_return:>9.1f} {100 * r.lap_rate:>9.1f}% {lap:>9} "
            f"{100 * r.crash_rate:>9.1f}%"
        )
    return "\n".join(lines)
