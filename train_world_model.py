"""PlaNet world model on pixel episodes: see ``--help``."""

from rlkit.cli.train_world_model import main

if __name__ == "__main__":
    raise SystemExit(main())
