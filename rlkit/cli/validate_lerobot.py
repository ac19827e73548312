"""``rlkit-validate-lerobot DIR``: check a LeRobot dataset against the loader's invariants."""

from __future__ import annotations

import argparse
import logging
import sys

from rlkit.lerobot.validate import validate_dataset

PROG = "rlkit-validate-lerobot"


def main(argv: list[str] | None = None) -> int:
    """Validate each dataset given; exit 0 when all are valid, 1 otherwise, 2 for bad flags."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Check LeRobot datasets (v2.0/v2.1/v3.0) against the invariants lerobot's loader "
            "assumes: totals, contiguous indices, index = row position, task order, "
            "timestamps, stats shapes, feature dtype/shape vs parquet type, video files "
            "present and long enough."
        ),
    )
    parser.add_argument("datasets", nargs="+", metavar="DIR", help="dataset folder(s)")
    parser.add_argument(
        "--workers", type=int, default=None, help="threads for file checks (default: cores)"
    )
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    status = 0
    for root in args.datasets:
        problems = validate_dataset(root, workers=args.workers)
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
