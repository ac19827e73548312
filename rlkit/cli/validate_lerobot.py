"""``rlkit-validate-lerobot DIR [DIR ...]``: check LeRobot datasets against the loader's
invariants."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from rlkit.config import cli_main
from rlkit.config.fields import check_fields, opt
from rlkit.lerobot.merge.config import MAX_WORKERS
from rlkit.lerobot.validate import validate_dataset

PROG = "rlkit-validate-lerobot"
#: Its options' section name for ``--config`` files. config.yml has no such section and needs
#: none (the tool has nothing worth configuring); a ``--config`` file without it is accepted.
SECTION = "validate"
DESCRIPTION = (
    "Check LeRobot datasets (v2.0/v2.1/v3.0) against the invariants lerobot's loader assumes: "
    "totals, contiguous indices, index = row position, task order, timestamps, stats shapes, "
    "feature dtype/shape vs parquet type, video files present and long enough."
)


@dataclass
class ValidateConfig:
    """Options of ``rlkit-validate-lerobot``."""

    # required, and at least one (nargs "+"): argparse says so before any file is read
    datasets: list[str] = opt(help="dataset folder(s)", positional=True, nargs="+")
    workers: int | None = opt(
        None, "threads for file checks (default: cores)", bounds=f"[1, {MAX_WORKERS}]"
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.datasets:
            raise ValueError("datasets must name at least one dataset folder, got none")


def main(argv: list[str] | None = None) -> int:
    """Validate each dataset given; exit 0 when all are valid, 1 otherwise, 2 for bad flags."""
    cfg = cli_main(ValidateConfig, SECTION, argv, prog=PROG, description=DESCRIPTION)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    status = 0
    for root in cfg.datasets:
        problems = validate_dataset(root, workers=cfg.workers)
        if problems:
            status = 1
            print(f"{root}: {len(problems)} problem(s)")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"{root}: valid")
    return status


if __name__ == "__main__":
    sys.exit(main())
