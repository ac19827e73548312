"""``collect_demonstrations.py``: record expert laps in parallel as a LeRobot dataset."""

from __future__ import annotations

import sys

from rlkit.cli import run_tool
from rlkit.collect import CollectConfig, CollectError, CollectResult, collect
from rlkit.config import cli_main
from rlkit.tools import TOOLS

PROG = TOOLS["collect"].script
DESCRIPTION = (
    "Drive procedurally generated racing tracks with the expert, one episode per track, "
    "in parallel worker processes, and write the demonstrations as a LeRobot v3.0 dataset. "
    "The dataset is identical for any --workers."
)


def summary(res: CollectResult) -> str:
    return (
        f"\n  dataset         {res.output}\n"
        f"  episodes        {res.episodes}  ({res.frames} frames)\n"
        + (
            f"  executor        Ray: {res.cluster['nodes']} node(s), {res.cluster['cpus']} CPUs\n"
            if res.cluster
            else f"  workers         {res.workers}\n"
        )
        + f"  wall time       {res.wall_s:.2f} s  ({res.episodes_per_s:.1f} episodes/s)\n"
        f"  mean return     {res.mean_return:.1f}\n"
        f"  lap completion  {100 * res.lap_rate:.1f} %  (first lap {res.mean_first_lap_s:.2f} s)\n"
        f"  left the track  {100 * res.crash_rate:.1f} %"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse flags (CLI > config.yml ``collect`` > defaults), collect, print a summary."""
    cfg = cli_main(CollectConfig, "collect", argv, prog=PROG, description=DESCRIPTION)
    return run_tool(
        PROG,
        lambda: summary(collect(cfg, argv=argv)),
        (OSError, CollectError, ValueError),
    )


if __name__ == "__main__":
    sys.exit(main())
