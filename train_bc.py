"""Behaviour cloning from a LeRobot dataset: see ``--help``."""

from rlkit.cli.train_bc import main

if __name__ == "__main__":
    raise SystemExit(main())
