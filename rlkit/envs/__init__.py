"""Racing environments: track generator, simulator, single env, batched VecEnv, expert.

``RacingVecEnv`` is imported lazily: it needs Stable-Baselines3 (and so torch), which the
collection workers never load.
"""

from __future__ import annotations

from typing import Any

from rlkit.envs.expert import Expert, speed_profile
from rlkit.envs.racing import RacingEnv
from rlkit.envs.render import render_frame
from rlkit.envs.sim import CarParams, RacingConfig, RacingSim
from rlkit.envs.track import Track, TrackSpec, generate_track

__all__ = [
    "CarParams",
    "Expert",
    "RacingConfig",
    "RacingEnv",
    "RacingSim",
    "RacingVecEnv",
    "Track",
    "TrackSpec",
    "generate_track",
    "render_frame",
    "speed_profile",
]


def __getattr__(name: str) -> Any:
    if name == "RacingVecEnv":
        from rlkit.envs.vec_env import RacingVecEnv

        return RacingVecEnv
    raise AttributeError(f"module 'rlkit.envs' has no attribute {name!r}")
