"""One batched episode loop for every driver: collection, DAgger labels, evaluation, video.

:func:`rollout` drives ``len(episodes)`` cars as one :class:`~rlkit.envs.sim.RacingSim`
batch. Car ``k`` drives episode ``episodes[k]`` of a seed stream: its track and start state
come from ``episode_seed(seed, episodes[k], stream)`` only, so an episode is the same whatever
batch, worker or tool drives it. The streams are disjoint (``demo`` for collection, ``dagger``,
``val`` for evaluations during training and checkpoint selection, ``test`` for final reports;
see :data:`~rlkit.utils.SEED_STREAMS`), so a policy, the expert and an RL agent evaluated with
the same ``seed`` and stream drive exactly the same tracks from the same start states.

Time index of car ``k``: at step ``t`` it observes ``o_t``, the driver returns ``a_t``, the
sim returns ``r_t``; its episode ends at step ``length[k] - 1`` (left the track, the time
limit, or with ``until_lap`` its first lap). Cars in a batch never influence each other; a
car whose episode ended keeps moving in the batch but is no longer recorded.

What a rollout records:

- always, per episode: ``length``, ``returns`` (float64 sum of rewards), ``laps``,
  ``first_lap_time`` and ``terminated``, all taken at the step the episode ends;
- ``record_steps``: time-major arrays ``obs`` (T, n, D) float32, ``action`` (T, n, 2)
  float32 (the ``labels`` driver's action where one is given: DAgger's expert labels) and
  ``reward`` (T, n) float32; entry ``[t, k]`` is valid for ``t < length[k]``;
- ``render_size``: ``frames[k]``, car ``k`` seen from above (``render_view``) at the start and
  after each of its steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from rlkit.envs.expert import Expert
from rlkit.envs.render import VIEWS
from rlkit.envs.render import render_view as draw_view
from rlkit.envs.sim import RacingConfig, RacingSim
from rlkit.utils import episode_seed

__all__ = [
    "ACTION_KEY",
    "CAMERA_KEYS",
    "OBS_KEY",
    "Driver",
    "EvalResult",
    "Rollout",
    "evaluate",
    "evaluate_drivers",
    "expert_driver",
    "model_driver",
    "pixel_policy_driver",
    "policy_driver",
    "rollout",
]

#: Feature names of the recorded observations and actions in a LeRobot dataset: the
#: collector writes them; train_bc.py and train_rl.py read them unless --obs-key /
#: --action-key name others.
OBS_KEY = "observation.state"
ACTION_KEY = "action"
#: The video feature of each camera view (``collect_demonstrations.py --camera-view``).
CAMERA_KEYS = {view: f"observation.images.{view}" for view in VIEWS}

#: A driver maps the observations of N cars (float32 (N, D)) and the simulator (for
#: state-based drivers such as the expert) to N actions (N, 2) in [-1, 1]. A driver with the
#: attribute ``uses_obs = False`` is passed ``None`` instead of observations, which the
#: rollout then does not compute.
Driver = Callable[[np.ndarray | None, RacingSim], np.ndarray]


class _ExpertDriver:
    uses_obs = False  # acts from the simulator state

    def __init__(self, expert: Expert) -> None:
        self.expert = expert

    def __call__(self, obs: np.ndarray | None, sim: RacingSim) -> np.ndarray:
        return self.expert.act_sim(sim)


def expert_driver(expert: Expert | None = None) -> Driver:
    return _ExpertDriver(expert or Expert())


def policy_driver(policy: object) -> Driver:
    """A :class:`~rlkit.policy.BCPolicy` (anything with ``act(obs) -> actions``)."""
    return lambda obs, sim: policy.act(obs)  # type: ignore[attr-defined]


class _PixelDriver:
    """A :class:`~rlkit.policy.PixelBCPolicy` driving from the frames of its camera view that
    it renders of every car (as ``collect --camera`` recorded them: the view before the
    action), with the frame ``gap`` steps earlier when it takes two (the first until then)."""

    uses_obs = False  # acts from rendered frames

    def __init__(self, policy: Any) -> None:
        self.policy, self.size = policy, policy.image_shape[0]
        self.gap, self.view = policy.gap, policy.view
        self.sim: RacingSim | None = None
        self.history: list[np.ndarray] = []

    def __call__(self, obs: np.ndarray | None, sim: RacingSim) -> np.ndarray:
        if sim is not self.sim:  # a new rollout
            self.sim, self.history = sim, []
        now = np.stack([draw_view(sim, k, self.size, self.view) for k in range(sim.num_cars)])
        self.history = [*self.history[-self.gap :], now] if self.gap else [now]
        frames = np.stack([now, self.history[0]], 1) if self.gap else now[:, None]
        return self.policy.act(frames)


def pixel_policy_driver(policy: object) -> Driver:
    """A :class:`~rlkit.policy.PixelBCPolicy` (``act(frames (N, S, H, W, 3)) -> actions``)
    on frames of its ``view`` (:func:`~rlkit.envs.render.render_view`), ``image_shape`` and
    ``gap``."""
    return _PixelDriver(policy)


def model_driver(model: object) -> Driver:
    """An SB3 model's deterministic action (anything with SB3's ``predict``)."""
    return lambda obs, sim: model.predict(obs, deterministic=True)[0]  # type: ignore[attr-defined]


def _uses_obs(driver: Driver | None) -> bool:
    return driver is not None and getattr(driver, "uses_obs", True)


@dataclass
class Rollout:
    """What :func:`rollout` recorded; per-episode arrays have one entry per car."""

    episodes: list[int]
    length: np.ndarray  # (n,) steps of each episode
    returns: np.ndarray  # (n,) float64 sum of the rewards of the episode's steps
    laps: np.ndarray  # (n,) track lengths driven (progress / length) when the episode ended
    first_lap_time: np.ndarray  # (n,) seconds, NaN if no lap was completed
    terminated: np.ndarray  # (n,) bool: the car left the track
    obs: np.ndarray | None = None  # (T, n, D) float32, record_steps
    action: np.ndarray | None = None  # (T, n, 2) float32, record_steps
    reward: np.ndarray | None = None  # (T, n) float32, record_steps
    frames: list[list[np.ndarray]] | None = None  # per car: uint8 (S, S, 3), render_size

    def valid(self, horizon: int) -> np.ndarray:
        """(n, horizon) bool: step ``t`` of car ``k`` belongs to its episode."""
        return np.arange(horizon)[None, :] < self.length[:, None]

    def by_episode(self, x: np.ndarray) -> np.ndarray:
        """Recorded (T, n, ...) steps -> episodes one after another (car order)."""
        return x.swapaxes(0, 1)[self.valid(len(x))]

    def by_time(self, x: np.ndarray) -> np.ndarray:
        """Recorded (T, n, ...) steps -> step 0 of every live car, then step 1, ..."""
        return x[self.valid(len(x)).T]


def _action_noise(seed: int, episodes: Sequence[int], std: float, horizon: int) -> np.ndarray:
    """(T, n, 2) Gaussian noise; episode ``i``'s comes from its own ``noise`` seed stream."""
    noise = np.zeros((horizon, len(episodes), 2))
    if std > 0:
        for k, ep in enumerate(episodes):
            rng = np.random.default_rng(episode_seed(seed, ep, "noise"))
            noise[:, k] = rng.normal(0.0, std, (horizon, 2))
    return noise


# One loop for every use, so its branches are the options; kept in one piece because the
# order of observe / act / record / step is the time-index convention of the docstring.
def rollout(
    driver: Driver,
    env_config: RacingConfig,
    seed: int,
    episodes: Sequence[int],
    stream: str = "test",
    *,
    labels: Driver | None = None,
    noise: float | None = None,
    record_steps: bool = False,
    render_size: int | None = None,
    render_view: str = "top",
    until_lap: bool = False,
) -> Rollout:
    """Drive ``episodes`` of ``stream`` with ``driver``, all cars as one batch.

    Args:
        driver: the actions executed.
        env_config: the task.
        seed, episodes, stream: car ``k`` drives the track of
            ``episode_seed(seed, episodes[k], stream)``.
        labels: with ``record_steps``, record this driver's actions instead of ``driver``'s
            (DAgger: the expert labels the states the policy visits).
        noise: execute ``clip(action + N(0, noise), -1, 1)`` (the noise of episode ``i`` from
            the ``noise`` stream; 0 clips only, as the collector always did); the clean
            action is recorded. None: execute the driver's action as it is.
        record_steps: record observations, actions and rewards (see :class:`Rollout`).
        render_size: record frames of this size (pixels).
        render_view: of this view: ``top`` (the whole track) or ``ego`` (behind the car).
        until_lap: an episode also ends when its car completes its first lap (video).
    """
    n, horizon = len(episodes), env_config.max_episode_steps
    sim = RacingSim(n, env_config)
    for k, ep in enumerate(episodes):
        sim.reset_car(k, seeding.np_random(episode_seed(seed, ep, stream))[0])
    shake = None if noise is None else _action_noise(seed, episodes, noise, horizon)
    needs_obs = _uses_obs(driver) or _uses_obs(labels)
    run = Rollout(
        episodes=list(episodes),
        length=np.full(n, horizon),
        returns=np.zeros(n),
        laps=np.zeros(n),
        first_lap_time=np.full(n, np.nan),
        terminated=np.zeros(n, dtype=bool),
    )
    if record_steps:
        run.obs = np.empty((horizon, n, env_config.obs_dim), dtype=np.float32)
        run.action = np.empty((horizon, n, 2), dtype=np.float32)
        run.reward = np.empty((horizon, n), dtype=np.float32)
    if render_size is not None:
        run.frames = [[draw_view(sim, k, render_size, render_view)] for k in range(n)]
    alive = np.ones(n, dtype=bool)
    live = np.arange(n)  # = np.flatnonzero(alive)
    for t in range(horizon):
        obs = sim.observe() if needs_obs else None  # every car: a policy sees a full batch
        action = driver(obs, sim)
        if record_steps:
            # finished cars are no longer observed (the collector's drivers need no obs)
            run.obs[t, live] = sim.observe(live) if obs is None else obs[live]
            run.action[t] = action if labels is None else labels(obs, sim)
        if shake is not None:
            action = np.clip(action + shake[t], -1.0, 1.0)
        reward, term, trunc, _ = sim.step(action)
        if record_steps:
            run.reward[t] = reward
        run.returns += np.where(alive, reward, 0.0)
        if run.frames is not None:
            for k in live:
                run.frames[k].append(draw_view(sim, k, render_size, render_view))
        ended = alive & (term | trunc)
        if until_lap:
            ended |= alive & (sim.laps >= 1)
        run.length[ended] = t + 1
        # Snapshot at the episode's end: finished cars keep moving in the batch.
        run.laps[ended] = sim.progress[ended] / sim.t_len[ended]
        run.first_lap_time[ended] = sim.first_lap_time[ended]
        run.terminated |= ended & term
        alive &= ~ended
        if not alive.any():
            break
        live = np.flatnonzero(alive)
    return run


# ------------------------------------------------------------------ evaluation
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


def evaluate(
    driver: Driver,
    env_config: RacingConfig,
    episodes: int,
    seed: int = 0,
    batch: int = 64,
    stream: str = "test",
) -> EvalResult:
    """Drive ``episodes`` held-out tracks with ``driver``, ``batch`` cars at a time."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    runs = [
        rollout(driver, env_config, seed, range(lo, min(lo + batch, episodes)), stream)
        for lo in range(0, episodes, batch)
    ]
    r, lp, fl, cr = (
        np.concatenate([getattr(run, name) for run in runs])
        for name in ("returns", "laps", "first_lap_time", "terminated")
    )
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


def evaluate_drivers(
    drivers: dict[str, Driver],
    env_config: RacingConfig,
    episodes: int,
    seed: int,
    stream: str = "test",
) -> dict[str, EvalResult]:
    """Every driver on the same held-out tracks (the rows of an eval table / eval.json)."""
    return {
        name: evaluate(d, env_config, episodes, seed, stream=stream) for name, d in drivers.items()
    }
