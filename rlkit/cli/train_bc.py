"""``train_bc.py``: behaviour cloning from a LeRobot dataset to a policy RL can start from."""

from __future__ import annotations

import logging
import sys

from rlkit.bc import BCConfig, summary_text, train_bc
from rlkit.config import cli_main
from rlkit.lerobot import LeRobotFormatError

PROG = "train_bc.py"
DESCRIPTION = (
    "Train an MLP policy on the state and action features of a LeRobot dataset (v2.1/v3.0), "
    "optionally refine it with DAgger, evaluate it against the expert on held-out tracks and "
    "export it as Stable-Baselines3 policies (PPO, SAC, TD3) for train_rl.py --init-from."
)


def main(argv: list[str] | None = None) -> int:
    """Parse flags (CLI > config.yml ``bc`` > defaults), train, print a summary."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = cli_main(BCConfig, "bc", argv, prog=PROG, description=DESCRIPTION)
    try:
        result = train_bc(cfg, argv=sys.argv[1:] if argv is None else argv)
    except (OSError, LeRobotFormatError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print("\n" + summary_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
