"""rlkit: train control policies fast on ordinary machines.

Importing rlkit registers the ``rlkit/Racing-v0`` Gymnasium environment.
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

if "rlkit/Racing-v0" not in registry:
    register(id="rlkit/Racing-v0", entry_point="rlkit.envs.racing:RacingEnv")
