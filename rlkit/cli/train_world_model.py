"""``train_world_model.py``: PlaNet world model on pixel episodes, with CEM planning."""

from __future__ import annotations

import sys

from rlkit.cli import run_tool
from rlkit.config import cli_main
from rlkit.planet.train import WorldModelConfig, summary_text, train_world_model
from rlkit.tools import TOOLS

PROG = TOOLS["world_model"].script
DESCRIPTION = (
    "Learn a PlaNet world model (RSSM) from 64x64 pixel episodes stored in data_dir, planning "
    "with CEM to collect new episodes online. Existing episodes are reused, missing seed "
    "episodes are collected with a random policy, and a run in output_dir resumes from its "
    "newest checkpoint."
)


def main(argv: list[str] | None = None) -> int:
    """Parse flags (CLI > config.yml ``world_model`` > defaults), train, print a summary."""
    cfg = cli_main(WorldModelConfig, "world_model", argv, prog=PROG, description=DESCRIPTION)
    return run_tool(
        PROG,
        lambda: "\n" + summary_text(train_world_model(cfg, argv=argv)),
        (OSError, ValueError, ImportError),
    )


if __name__ == "__main__":
    sys.exit(main())
