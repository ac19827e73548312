"""``train_rl.py``: Stable-Baselines3 on the racing env, warm-started from BC."""

from __future__ import annotations

import logging
import sys

from rlkit.config import cli_main
from rlkit.evaluate import format_eval_table
from rlkit.rl import RLConfig, eval_only, summary_text, train_rl

PROG = "train_rl.py"
DESCRIPTION = (
    "Fine-tune a driving policy with Stable-Baselines3 (SAC, PPO or TD3) on the racing env, "
    "vectorised as one batched RacingVecEnv or SB3's SubprocVecEnv/DummyVecEnv, optionally "
    "warm-started from a train_bc.py export. Checkpoints count environment steps; --resume "
    "continues the newest one."
)


def main(argv: list[str] | None = None) -> int:
    """Parse flags (CLI > config.yml ``rl`` > defaults), train or evaluate, print a summary."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = cli_main(RLConfig, "rl", argv, prog=PROG, description=DESCRIPTION)
    try:
        if cfg.eval_only:
            print(format_eval_table(eval_only(cfg)))
            return 0
        result = train_rl(cfg, argv=sys.argv[1:] if argv is None else argv)
    except (OSError, ValueError, ImportError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print("\n" + summary_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
