"""``meta/rlkit_env.json``: the racing env configuration a dataset was recorded with.

rlkit's collector writes it beside LeRobot's own metadata (LeRobot ignores it); BC and RL
read it to rebuild the env the demonstrations came from. Only json and the env config are
imported here (no pyarrow, no multiprocessing).
"""

from __future__ import annotations

import json
from pathlib import Path

from rlkit.envs.sim import RacingConfig

ENV_META_PATH = "meta/rlkit_env.json"


def env_meta_text(config: RacingConfig) -> str:
    """The contents of :data:`ENV_META_PATH` for ``config``."""
    return json.dumps(config.to_dict(), indent=2) + "\n"


def load_env_config(dataset_root: str | Path) -> RacingConfig | None:
    """The :class:`RacingConfig` a dataset was recorded with, or None if it has none."""
    path = Path(dataset_root) / ENV_META_PATH
    if not path.is_file():
        return None
    try:
        return RacingConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{path}: not a valid rlkit env config ({e}); re-collect the dataset"
        ) from e
