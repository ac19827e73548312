"""Merge LeRobot datasets (v2.0/v2.1/v3.0) into one: see ``--help``."""

from rlkit.cli.merge_lerobot_dataset import main

if __name__ == "__main__":
    raise SystemExit(main())
