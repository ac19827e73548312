"""``rlkit/Racing-v0``: drive a car around a procedurally generated track, fast."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlkit.envs.render import PygameWindow, render_frame
from rlkit.envs.sim import RacingConfig, RacingSim

__all__ = ["RacingEnv", "make_observation_space", "make_action_space"]


def make_observation_space(config: RacingConfig) -> spaces.Box:
    """Bounds of the observation vector (see :meth:`RacingSim.observe` for the layout)."""
    low = np.concatenate(
        [
            np.zeros(config.n_rays),
            [0.0, -1.0, -1.0, -2.0],
            -np.ones(len(config.preview)),
            [-1.0, -1.0],
        ]
    )
    high = np.concatenate(
        [np.ones(config.n_rays), [1.0, 1.0, 1.0, 2.0], np.ones(len(config.preview)), [1.0, 1.0]]
    )
    return spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)


def make_action_space() -> spaces.Box:
    return spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)


class RacingEnv(gym.Env):
    """A car on a closed track generated from a seed; the faster lap earns more.

    ## Description
    Each episode draws a new track from the environment's generator (or uses
    ``options["track_seed"]``): a closed road, 10 m wide by default, whose centreline is a
    polar Fourier curve. The car is a kinematic bicycle with a grip limit (see
    :mod:`rlkit.envs.sim`): corners taken too fast make it slide wide and leave the road.

    ## Action Space
    ``Box(-1, 1, (2,), float32)``: ``[steer, throttle]``. Steer -1/+1 is full right/left lock
    (rate-limited actuator); throttle > 0 accelerates, < 0 brakes.

    ## Observation Space
    ``Box(float32)`` of size ``n_rays + 4 + len(preview) + 2`` (21 by default):
    range-sensor rays over +-90 deg (distance to the road edge / ``ray_range``, in [0, 1]);
    speed / max speed; steering angle / max steer; heading error / pi; lateral offset /
    half-width; track curvature at the preview distances ahead (scaled to [-1, 1]);
    previous action. Names: ``RacingConfig.obs_names``.

    ## Rewards
    Progress along the centreline, in units of the distance covered in one step at top
    speed (so +1 per step at full speed on the centreline, negative when driving backwards),
    minus ``crash_penalty`` on the step that leaves the road. Over a fixed horizon the faster
    car covers more distance and earns more.

    ## Starting State
    At rest on the start line (sample 0), with a small random lateral offset and heading.

    ## Episode End
    Terminated when the car leaves the road (``|lateral offset| > edge * half-width``,
    ``edge`` 1 by default); truncated
    after ``max_episode_steps`` (1000 steps of 0.05 s by default).

    ## Info
    ``laps`` (completed fraction of laps, float), ``off_track``, ``speed`` (m/s), and
    ``lap_time`` (seconds) on the step that completes a lap.

    ## Rendering
    ``render_mode="rgb_array"``: :meth:`render` returns the top-down frame, uint8
    ``(render_size, render_size, 3)`` (96 px by default). ``render_mode="human"``: every
    :meth:`reset` and :meth:`step` draws that frame in a pygame window (512 px by default)
    at ``metadata["render_fps"]`` (real time, ``1 / dt``), :meth:`render` returns None and
    :meth:`close` closes the window. Needs ``pip install pygame`` (the ``rlkit[human]``
    extra) and a display; pygame has one window per process.

    ## Reset Options
    ``env.reset(seed=..., options={"track_seed": k})`` drives track ``k`` instead of a random
    one (evaluation on fixed held-out tracks).

    ## Arguments
    ``gymnasium.make("rlkit/Racing-v0", render_mode="rgb_array", render_size=96,
    config=RacingConfig(...), **overrides)``; keyword overrides replace fields of the config
    (e.g. ``max_episode_steps=500, n_rays=15``). ``render_size``: side of the frame in
    pixels (default 96 for ``rgb_array``, 512 for the ``human`` window).
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 20}

    #: default frame side in pixels per render mode (a human watches a bigger picture)
    DEFAULT_RENDER_SIZE = {"rgb_array": 96, "human": 512}

    def __init__(
        self,
        render_mode: str | None = None,
        render_size: int | None = None,
        config: RacingConfig | None = None,
        **overrides: Any,
    ) -> None:
        config = config or RacingConfig()
        if overrides:
            import dataclasses

            config = dataclasses.replace(config, **overrides)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.config = config
        self.render_mode = render_mode
        if render_size is None:
            render_size = self.DEFAULT_RENDER_SIZE.get(render_mode or "rgb_array", 96)
        self.render_size = int(render_size)
        if self.render_size < 8:
            raise ValueError(f"render_size must be >= 8 pixels, got {self.render_size}")
        self.window: PygameWindow | None = None  # opened by the first human-mode frame
        self.sim = RacingSim(1, config)
        self.observation_space = make_observation_space(config)
        self.action_space = make_action_space()
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / config.dt))}

    @property
    def track(self):
        """The current episode's :class:`~rlkit.envs.track.Track`."""
        return self.sim.tracks[0]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        track_seed = (options or {}).get("track_seed")
        self.sim.reset_car(0, self.np_random, track_seed=track_seed)
        if self.render_mode == "human":
            self._render_human()
        return self.sim.observe()[0], self._info()

    def step(self, action):
        reward, terminated, truncated, lap_done = self.sim.step(np.asarray(action)[None])
        info = self._info()
        if lap_done[0]:
            info["lap_time"] = float(self.sim.lap_time[0])
        if self.render_mode == "human":
            self._render_human()
        return (
            self.sim.observe()[0],
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            info,
        )

    def _info(self) -> dict[str, Any]:
        sim = self.sim
        return {
            "laps": float(sim.progress[0] / sim.t_len[0]),
            "off_track": bool(sim.off_track[0]),
            "speed": float(sim.v[0]),
        }

    def render(self) -> np.ndarray | None:
        """The current frame (``rgb_array``); None in ``human`` mode, which draws by itself
        on every reset/step (a call redraws the window), and without a render mode."""
        if self.render_mode == "human":
            self._render_human()
            return None
        if self.render_mode != "rgb_array":
            return None
        return render_frame(self.sim, 0, self.render_size)

    def _render_human(self) -> None:
        # pygame is imported here, with the first frame, so the env never needs it otherwise
        if self.window is None:
            self.window = PygameWindow(self.render_size, self.metadata["render_fps"])
        if self.window.is_open:  # closed by the user: the live view is over, skip the drawing
            self.window.show(render_frame(self.sim, 0, self.render_size))

    def close(self) -> None:
        """Close the human-mode window, if one is open."""
        if self.window is not None:
            self.window.close()
            self.window = None
        super().close()
