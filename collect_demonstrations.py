"""Record expert demonstrations in parallel: see ``--help``."""

from rlkit.cli.collect_demonstrations import main

if __name__ == "__main__":
    raise SystemExit(main())
