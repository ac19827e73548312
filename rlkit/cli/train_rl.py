"""``train_rl.py``: Stable-Baselines3 on the racing env, warm-started from BC."""

from __future__ import annotations

import sys

from rlkit.cli import run_tool
from rlkit.config import cli_main
from rlkit.report import format_eval_table
from rlkit.rl import RLConfig, eval_only, seeds, summary_text, train_rl
from rlkit.rl.seeds import SeedRunError, SeedsResult
from rlkit.tools import TOOLS

PROG = TOOLS["rl"].script
DESCRIPTION = (
    "Fine-tune a driving policy with Stable-Baselines3 (SAC, PPO or TD3) on the racing env, "
    "vectorised as one batched RacingVecEnv or SB3's SubprocVecEnv/DummyVecEnv, optionally "
    "warm-started from a train_bc.py export. Checkpoints count environment steps; --resume "
    "continues the newest one."
)


def main(argv: list[str] | None = None) -> int:
    """Parse flags (CLI > config.yml ``rl`` > defaults), train or evaluate, print a summary."""
    cfg = cli_main(RLConfig, "rl", argv, prog=PROG, description=DESCRIPTION)

    def work() -> str:
        if cfg.eval_only:
            return format_eval_table(eval_only(cfg))
        result = train_rl(cfg, argv=argv)
        if isinstance(result, SeedsResult):
            return "\n" + seeds.summary_text(result)
        return "\n" + summary_text(result)

    return run_tool(PROG, work, (OSError, ValueError, ImportError, SeedRunError))


if __name__ == "__main__":
    sys.exit(main())
