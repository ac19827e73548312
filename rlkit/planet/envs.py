"""Pixel environments for the world model: 64x64x3 uint8 observations, actions in [-1, 1].

``make_pixel_env("pendulum" | "racing", action_repeat=4)`` returns a :class:`PixelEnv`:

* **pendulum**: gymnasium ``Pendulum-v1`` (200 steps, never terminates). The frame is drawn
  from the pendulum angle by :func:`render_pendulum`, a numpy rasteriser of the same picture
  gymnasium draws (red rod of length 1 and width 0.2 on white, 2.2 units each side of the
  pivot, angle 0 = upright), at 64x64 directly. ``render="gym"`` instead uses gymnasium's
  own ``render_mode="rgb_array"`` (pygame, 500x500) and shrinks it with PIL's box filter;
  ``bench/bench_world_model.py`` measures both.
* **racing**: ``rlkit/Racing-v0`` rendered top-down by :func:`rlkit.envs.render_frame` at
  64x64 natively (the static track image is cached, only the car is painted per frame), or
  from behind the car; by default with a dashboard (speed and steering bars) in the bottom
  rows, since neither is visible in one frame.

Actions are normalised to [-1, 1] for every env (pendulum torque = 2 * action), so the
planner and the stored episodes use one range. ``action_repeat`` repeats each action and
sums the rewards; an episode ends on the first terminated or truncated inner step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import lru_cache
from typing import Any, Literal

import gymnasium as gym
import numpy as np

__all__ = ["ENVS", "PixelEnv", "make_pixel_env", "render_pendulum"]

ENVS = ("pendulum", "racing")
IMAGE_SIZE = 64

_ROD = np.array([204, 77, 77], dtype=np.float32)  # gymnasium's pendulum colour
_BOUND = 2.2  # world units from the pivot to the frame edge (as gymnasium)


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """World (x, y) of every pixel centre, y up; pivot at the centre."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 * _BOUND - _BOUND
    x, y = np.meshgrid(c, -c)
    return x, y


def render_pendulum(theta: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw the pendulum at angle ``theta`` (rad, 0 = upright): uint8 (size, size, 3).

    The rod is a capsule from the pivot to (-sin theta, cos theta), width 0.2; edges are
    anti-aliased over one pixel. About 0.05 ms at 64x64 (see the benchmark).
    """
    x, y = _pixel_grid(size)
    ex, ey = -np.sin(theta), np.cos(theta)
    u = np.clip(x * ex + y * ey, 0.0, 1.0)  # projection on the rod, rod length 1
    dist = np.hypot(x - u * ex, y - u * ey)
    pixel = 2 * _BOUND / size
    cover = np.clip((0.1 - dist) / pixel + 0.5, 0.0, 1.0)[..., None]  # 1 inside, 0 outside
    img = 255.0 + cover * (_ROD - 255.0)
    return img.astype(np.uint8)


class PixelEnv(ABC):
    """A pixel environment: ``reset(seed) -> obs``, ``step(a) -> (obs, r, term, trunc)``.

    Observations are uint8 (64, 64, 3); actions float32 in [-1, 1] of shape (action_dim,).
    ``info`` is the inner env's info of the last reset or step (racing: ``laps`` driven).
    """

    name: str
    action_dim: int
    info: dict[str, Any]

    @abstractmethod
    def reset(self, seed: int | None = None) -> np.ndarray: ...

    @abstractmethod
    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]: ...

    def close(self) -> None:  # noqa: B027 -- optional hook: most pixel envs hold nothing
        return None


class _RepeatEnv(PixelEnv):
    """Shared action-repeat logic over an inner gymnasium env; subclasses provide frames."""

    def __init__(self, env: gym.Env, action_repeat: int, action_scale: float) -> None:
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        self.env, self.action_repeat, self.action_scale = env, action_repeat, action_scale
        self.action_dim = int(np.prod(env.action_space.shape))
        self.info = {}

    @abstractmethod
    def frame(self) -> np.ndarray:
        """The current 64x64x3 uint8 frame of the inner env."""

    def reset(self, seed: int | None = None) -> np.ndarray:
        _, self.info = self.env.reset(seed=seed)
        return self.frame()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(self.action_dim), -1, 1)
        total, term, trunc = 0.0, False, False
        for _ in range(self.action_repeat):
            _, r, term, trunc, self.info = self.env.step(a * self.action_scale)
            total += float(r)
            if term or trunc:
                break
        return self.frame(), total, bool(term), bool(trunc)

    def close(self) -> None:
        self.env.close()


class PixelPendulum(_RepeatEnv):
    """``Pendulum-v1`` seen as 64x64 frames; torque = 2 * action (action in [-1, 1])."""

    name = "pendulum"

    def __init__(
        self,
        action_repeat: int = 4,
        max_episode_steps: int | None = None,
        render: Literal["native", "gym"] = "native",
    ) -> None:
        kwargs: dict[str, Any] = {}
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = max_episode_steps
        if render == "gym":
            try:
                import pygame  # noqa: F401
            except ImportError as e:
                raise ImportError(
                    "--pixel-render gym needs pygame: pip install pygame "
                    "(or pip install 'rlkit[pixels]')"
                ) from e
            kwargs["render_mode"] = "rgb_array"
        elif render != "native":
            raise ValueError(f"render must be 'native' or 'gym', got {render!r}")
        self.render = render
        super().__init__(gym.make("Pendulum-v1", **kwargs), action_repeat, 2.0)

    def frame(self) -> np.ndarray:
        if self.render == "native":
            return render_pendulum(float(self.env.unwrapped.state[0]))
        from PIL import Image

        big = self.env.render()  # (500, 500, 3) uint8
        return np.asarray(Image.fromarray(big).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX))


class PixelRacing(_RepeatEnv):
    """``rlkit/Racing-v0`` at 64x64, seen top-down (the whole track) or from behind the car
    (``view="ego"``, the camera of ``collect --camera-view ego``); action [steer, throttle]
    in [-1, 1]. ``dashboard=True`` paints the speed and steering bars of
    :func:`rlkit.envs.render.draw_dashboard` over the bottom 4 rows."""

    name = "racing"

    def __init__(
        self,
        action_repeat: int = 4,
        max_episode_steps: int | None = None,
        view: str = "top",
        dashboard: bool = True,
    ) -> None:
        from rlkit.envs.racing import RacingEnv
        from rlkit.envs.render import VIEWS

        if view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
        overrides = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
        super().__init__(RacingEnv(**overrides), action_repeat, 1.0)  # frames: render_view
        self.view, self.dashboard = view, dashboard

    def frame(self) -> np.ndarray:
        from rlkit.envs.render import draw_dashboard, render_view

        sim = self.env.sim
        img = render_view(sim, 0, IMAGE_SIZE, self.view)
        if self.dashboard:
            car = sim.config.car
            draw_dashboard(img, sim.v[0] / car.max_speed, sim.delta[0] / car.max_steer)
        return img


def make_pixel_env(
    name: str,
    action_repeat: int = 4,
    max_episode_steps: int | None = None,
    render: Literal["native", "gym"] = "native",
    view: str = "top",
    dashboard: bool = True,
) -> PixelEnv:
    """Build the pixel env ``name`` (``pendulum`` or ``racing``).

    Args:
        name: Environment name.
        action_repeat: Inner env steps per action (rewards summed).
        max_episode_steps: Inner env steps before truncation (None: the env's default,
            200 for pendulum, 1000 for racing).
        render: Pendulum frames from the numpy rasteriser (``native``) or gymnasium's pygame
            renderer shrunk from 500x500 (``gym``). Racing always renders natively.
        view: Racing's camera: ``top`` (the whole track) or ``ego`` (behind the car).
        dashboard: Racing: speed and steering bars over the bottom rows of every frame.

    Raises:
        ValueError: For an unknown env name.
    """
    if name == "pendulum":
        return PixelPendulum(action_repeat, max_episode_steps, render)
    if name == "racing":
        return PixelRacing(action_repeat, max_episode_steps, view, dashboard)
    raise ValueError(f"env must be one of {', '.join(ENVS)}, got {name!r}")
