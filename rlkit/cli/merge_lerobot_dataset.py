"""``merge_lerobot_dataset.py``: merge LeRobot datasets (v2.0/v2.1/v3.0) into one."""

from __future__ import annotations

import sys

from rlkit.cli import run_tool
from rlkit.config import cli_main
from rlkit.lerobot import LeRobotFormatError
from rlkit.lerobot.merge import MergeConfig, merge, summary_text
from rlkit.tools import TOOLS

PROG = TOOLS["merge"].script
DESCRIPTION = (
    "Merge LeRobot datasets (v2.0, v2.1, v3.0, mixed) into one v3.0 (or v2.1) dataset: "
    "re-indexed episodes, deduplicated tasks, vector features zero-padded to a common dim, "
    "exact pooled stats, videos hard-linked without re-encoding. Every source is checked "
    "before anything is written; the output is validated and renamed into place."
)


def main(argv: list[str] | None = None) -> int:
    """Parse flags (CLI > config.yml ``merge`` > defaults), merge, print a summary."""
    cfg = cli_main(MergeConfig, "merge", argv, prog=PROG, description=DESCRIPTION)
    if not cfg.sources:
        print(
            f"{PROG}: error: sources is required: pass --sources DIR [DIR ...] or set "
            "'sources' in section 'merge' of config.yml",
            file=sys.stderr,
        )
        return 2
    return run_tool(
        PROG,
        lambda: "\n" + summary_text(merge(cfg)),
        (OSError, LeRobotFormatError, ValueError),
    )


if __name__ == "__main__":
    sys.exit(main())
