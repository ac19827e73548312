"""``RacingVecEnv``: many racing cars stepped as arrays in one process (an SB3 ``VecEnv``).

Instead of one Python env per subprocess (``SubprocVecEnv``), every car's state lives in
the arrays of one :class:`~rlkit.envs.sim.RacingSim`, so a step of N cars costs a few
dozen numpy calls regardless of N. The number of cars may far exceed the number of cores.

Car ``i`` behaves exactly like a :class:`~rlkit.envs.racing.RacingEnv` reset with seed
``seed + i`` and then auto-reset without a seed: each car owns a generator created the way
Gymnasium creates ``np_random``, and the shared step function is element-wise per car.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from rlkit.envs.racing import make_action_space, make_observation_space
from rlkit.envs.render import render_frame
from rlkit.envs.sim import RacingConfig, RacingSim

__all__ = ["RacingVecEnv"]


class RacingVecEnv(VecEnv):
    """``num_envs`` racing cars in one process, auto-reset, SB3-compatible.

    Args:
        num_envs: number of cars.
        config: task definition shared by all cars (default :class:`RacingConfig`).
        seed: if given, car ``i`` is seeded with ``seed + i`` at the first reset (as
            ``VecEnv.seed`` does).
        render_mode: ``"rgb_array"`` or None; ``get_images`` renders every car.
        render_size: frame size in pixels.
        **overrides: replace fields of ``config`` (e.g. ``max_episode_steps=500``).

    ``step`` returns SB3's ``(obs, rewards, dones, infos)``. ``infos[i]`` is an empty dict
    except for cars whose episode ended on this step, which get ``terminal_observation``,
    ``TimeLimit.truncated``, ``episode`` (``r``, ``l``, ``t`` like ``Monitor``), ``laps``,
    ``first_lap_time`` (seconds, NaN if no lap) and ``off_track``.
    """

    def __init__(
        self,
        num_envs: int,
        config: RacingConfig | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
        render_size: int = 96,
        **overrides: Any,
    ) -> None:
        config = config or RacingConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.config = config
        self.render_mode = render_mode  # read by VecEnv.__init__ through get_attr
        self.render_size = int(render_size)
        self.sim = RacingSim(num_envs, config)
        super().__init__(num_envs, make_observation_space(config), make_action_space())
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._episode_return = np.zeros(num_envs)
        self._actions = np.zeros((num_envs, 2))
        self._t0 = time.perf_counter()
        if seed is not None:
            self.seed(seed)

    # ------------------------------------------------------------------ core API
    def _reset_car(self, i: int, seed: int | None, options: dict[str, Any] | None) -> None:
        if seed is not None or self._rngs[i] is None:
            self._rngs[i], _ = seeding.np_random(seed)
        rng = self._rngs[i]
        assert rng is not None
        self.sim.reset_car(i, rng, track_seed=(options or {}).get("track_seed"))
        self._episode_return[i] = 0.0

    def reset(self) -> VecEnvObs:
        for i in range(self.num_envs):
            self._reset_car(i, self._seeds[i], self._options[i])
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self.sim.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        sim = self.sim
        reward, terminated, truncated, _ = sim.step(self._actions)
        obs = sim.observe()
        self._episode_return += reward
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        done_idx = np.flatnonzero(dones)
        if done_idx.size:
            elapsed = round(time.perf_counter() - self._t0, 6)
            for i in done_idx:
                infos[i] = {
                    "terminal_observation": obs[i].copy(),
                    "TimeLimit.truncated": bool(truncated[i]),
                    "episode": {
                        "r": float(self._episode_return[i]),
                        "l": int(sim.steps[i]),
                        "t": elapsed,
                    },
                    "laps": float(sim.progress[i] / sim.t_len[i]),
                    "first_lap_time": float(sim.first_lap_time[i]),
                    "off_track": bool(sim.off_track[i]),
                }
                self._reset_car(int(i), None, None)
            obs[done_idx] = sim.observe(done_idx)
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ VecEnv plumbing
    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        return [render_frame(self.sim, i, self.render_size) for i in range(self.num_envs)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attributes are shared by all cars (one config): the same value for each index."""
        value = getattr(self, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if len(list(self._get_indices(indices))) != self.num_envs:
            raise ValueError(
                "RacingVecEnv shares attributes between cars; set them for all indices"
            )
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
