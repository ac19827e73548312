"""``train_bc.py``: behaviour cloning from a LeRobot dataset to a policy RL can start from."""

from __future__ import annotations

import sys

from rlkit.bc import BCConfig, summary_text, train_bc
from rlkit.cli import run_tool
from rlkit.config import cli_main
from rlkit.lerobot import LeRobotFormatError
from rlkit.tools import TOOLS

PROG = TOOLS["bc"].script
DESCRIPTION = (
    "Train an MLP policy on the state and action features of a LeRobot dataset (v2.1/v3.0), "
    "optionally refine it with DAgger, evaluate it against the expert on held-out tracks and "
    "export it as Stable-Baselines3 policies (PPO, SAC, TD3) for train_rl.py --init-from."
)


def main(argv: list[str] | None = None) -> int:
    """Parse flags (CLI > config.yml ``bc`` > defaults), train, print a summary."""
    cfg = cli_main(BCConfig, "bc", argv, prog=PROG, description=DESCRIPTION)
    return run_tool(
        PROG,
        lambda: "\n" + summary_text(train_bc(cfg, argv=argv)),
        (OSError, LeRobotFormatError, ValueError, MemoryError),
    )


if __name__ == "__main__":
    sys.exit(main())
