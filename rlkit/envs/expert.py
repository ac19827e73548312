"""A fast, vectorised expert driver: pure pursuit + a grip-limited speed profile.

The expert reads the simulator state (not the observation), so it can label any state a
learner visits (DAgger). Per car:

* **Steering** -- pure pursuit on the centreline: aim at the point ``L_d`` metres ahead
  (``L_d`` grows with speed) and command the bicycle-model steering angle that reaches it,
  ``delta = atan(2 * wheelbase * sin(alpha) / L_d)``.
* **Speed profile** -- computed once per track: the highest speed each corner allows under
  the grip limit, ``sqrt(margin * grip / |curvature|)``, then a backward pass so the car
  can brake down to every corner in time (``v_i^2 <= v_{i+1}^2 + 2 * brake * ds``).
* **Speed loop** -- proportional throttle/brake towards the profile a short time ahead.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from rlkit.envs.sim import RacingConfig, RacingSim
from rlkit.envs.track import Track

__all__ = ["Expert", "speed_profile"]


def speed_profile(
    track: Track, config: RacingConfig, grip_margin: float, brake_margin: float
) -> np.ndarray:
    """Target speed (m/s) at every centreline sample of ``track``.

    Args:
        track: the track.
        config: task definition (car limits).
        grip_margin: fraction of the grip limit used in corners.
        brake_margin: fraction of the braking deceleration planned for.
    """
    car = config.car
    v = np.minimum(
        np.sqrt(grip_margin * car.grip / np.maximum(np.abs(track.curvature), 1e-9)), car.max_speed
    )
    dv2 = 2.0 * brake_margin * car.brake * track.ds
    m = v.size
    vmax = v.tolist()
    # Backward pass, twice around so braking zones wrap across the start line.
    nxt = vmax[0]
    for k in range(2 * m - 1, -1, -1):
        i = k % m
        nxt = min(vmax[i], (nxt * nxt + dv2) ** 0.5)
        vmax[i] = nxt
    return np.asarray(vmax)


@dataclass
class Expert:
    """Vectorised expert for :class:`RacingSim`, :class:`RacingEnv` and :class:`RacingVecEnv`.

    Attributes:
        lookahead_base: pure-pursuit look-ahead at standstill, metres.
        lookahead_gain: extra look-ahead per m/s of speed, seconds.
        grip_margin: fraction of the grip limit planned for in corners.
        brake_margin: fraction of the maximum braking planned for.
        speed_gain: throttle per m/s of speed error.
        lead_time: how far ahead (seconds at the current speed) the speed target is read.
    """

    lookahead_base: float = 3.0
    lookahead_gain: float = 0.35
    grip_margin: float = 0.85
    brake_margin: float = 0.6
    speed_gain: float = 0.5
    lead_time: float = 0.3

    def __post_init__(self) -> None:
        self._profiles: weakref.WeakKeyDictionary[Track, np.ndarray] = weakref.WeakKeyDictionary()
        self._sim_cache: weakref.WeakKeyDictionary[RacingSim, tuple[list[Any], np.ndarray]] = (
            weakref.WeakKeyDictionary()
        )

    def __getstate__(self) -> dict[str, Any]:
        # The caches hold weak references (not picklable); workers rebuild them.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def _profile(self, track: Track, config: RacingConfig) -> np.ndarray:
        prof = self._profiles.get(track)
        if prof is None:
            prof = self._profiles[track] = speed_profile(
                track, config, self.grip_margin, self.brake_margin
            )
        return prof

    def _profiles_flat(self, sim: RacingSim) -> np.ndarray:
        """Speed profiles of every car's track, flattened like ``sim.t_curv``."""
        m = sim.config.track.n_samples
        tracks, flat = self._sim_cache.get(sim, (None, None))
        if flat is None:
            tracks, flat = [None] * sim.num_cars, np.zeros(sim.num_cars * m)
            self._sim_cache[sim] = (tracks, flat)
        for i, track in enumerate(sim.tracks):
            if tracks[i] is not track:
                if track is None:
                    raise RuntimeError("the expert was asked to act before the env was reset")
                flat[i * m : (i + 1) * m] = self._profile(track, sim.config)
                tracks[i] = track
        return flat

    def act_sim(self, sim: RacingSim) -> np.ndarray:
        """Actions ``(N, 2)`` in [-1, 1] for every car of ``sim``."""
        cfg = sim.config
        car = cfg.car
        m = cfg.track.n_samples
        base = np.arange(sim.num_cars) * m
        v = sim.v

        def at(table: np.ndarray, s: np.ndarray) -> np.ndarray:
            """Linear interpolation of a flattened per-sample table at lap positions s."""
            pos = s / sim.t_ds
            i0 = np.floor(pos).astype(np.int64)
            frac = pos - i0
            lo = table[base + i0 % m]
            return lo + frac * (table[base + (i0 + 1) % m] - lo)

        # Pure pursuit towards the centreline point L_d ahead.
        lookahead = self.lookahead_base + self.lookahead_gain * v
        target = at(sim.t_c, sim.s + lookahead)
        rel = target - (sim.x + 1j * sim.y)
        alpha = np.angle(rel) - sim.psi
        delta = np.arctan2(2.0 * car.wheelbase * np.sin(alpha), np.maximum(np.abs(rel), 1e-6))
        steer = np.clip(delta / car.max_steer, -1.0, 1.0)

        # Speed loop towards the profile a little ahead.
        v_target = at(self._profiles_flat(sim), sim.s + v * self.lead_time + 1.0)
        throttle = np.clip(self.speed_gain * (v_target - v), -1.0, 1.0)
        return np.stack([steer, throttle], axis=1)

    def act(self, env: Any) -> np.ndarray:
        """Expert action for a ``RacingSim``, a (wrapped) ``RacingEnv`` -> ``(2,)``, or a
        ``RacingVecEnv`` -> ``(N, 2)``."""
        if isinstance(env, RacingSim):
            return self.act_sim(env)
        unwrapped = getattr(env, "unwrapped", env)
        sim = getattr(unwrapped, "sim", None)
        if not isinstance(sim, RacingSim):
            raise TypeError(f"the expert drives rlkit racing envs only, got {type(env).__name__}")
        actions = self.act_sim(sim)
        from rlkit.envs.racing import RacingEnv

        return actions[0] if isinstance(unwrapped, RacingEnv) else actions
