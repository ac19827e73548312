"""RL fine-tuning with Stable-Baselines3: see ``--help``."""

from rlkit.cli.train_rl import main

if __name__ == "__main__":
    raise SystemExit(main())
