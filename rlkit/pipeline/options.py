"""The pipeline's own options (``train_optimized.sh`` / ``python -m rlkit.pipeline``).

A dataclass like every tool's options, so its parser, help and checks come from
:mod:`rlkit.config`. The pipeline has no config.yml section: its stages read theirs, and
``--config`` is handed to every stage.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from rlkit.config.fields import check_fields, opt
from rlkit.utils import WORKER_RULES

__all__ = [
    "DESCRIPTION",
    "EPILOG",
    "MAX_CORES",
    "MAX_SEEDS",
    "MAX_WORKERS",
    "WORKER_VARS",
    "PipelineOptions",
]

#: Bounds of --cores / RLKIT_CORES and of every worker count: catch typos (-4, 0, 40000).
MAX_CORES = 4096
MAX_WORKERS = 4096
MAX_SEEDS = 1000

DESCRIPTION = """\
Run the whole rlkit pipeline -- collect_demonstrations.py -> train_bc.py -> train_rl.py
(-> train_world_model.py) -- in one run folder, with worker counts derived from the cores,
and print the measured wall time, throughput and result of every stage."""

EPILOG = """\
worker counts: flag > environment variable (RLKIT_COLLECT_WORKERS, RLKIT_BC_WORKERS,
RLKIT_RL_ENVS) > the seeds' formulas on the core count (RLKIT_CORES or nproc).
settings: config.yml (or --config PATH), as for every tool; flags after -- go to every stage
that has them, e.g.  ./train_optimized.sh -- --seed 3 --epochs 20 --algo sac
presets: default = config.yml sizes (the seeds' 100 episodes, 50 epochs; PPO 1M env steps);
--quick = 20 episodes, 10 epochs, 60k timesteps (35 s measured on 2 cores; see README.md).
run folder: locked while a pipeline writes it; stages die with the pipeline; Ctrl-C stops the
running stage (it saves what it can), then --resume RUN_DIR continues."""


#: Worker key (a kind of :data:`rlkit.utils.WORKER_RULES`) -> the variable that overrides its rule.
WORKER_VARS = {"collect": "RLKIT_COLLECT_WORKERS", "bc": "RLKIT_BC_WORKERS", "rl": "RLKIT_RL_ENVS"}


def _workers_help(what: str, kind: str) -> str:
    rule = WORKER_RULES[kind][0]
    return f"{what} (default: {WORKER_VARS[kind]}, else {rule})"


@dataclass
class PipelineOptions:
    """Options of ``train_optimized.sh``; ``--resume`` takes none of the others but ``--cores``
    (the run repeats the settings saved in its ``pipeline.json``)."""

    quick: bool = opt(False, "small sizes: ~35 s on 2 cores")
    resume: str | None = opt(
        None,
        "continue an interrupted run with its saved settings (default: a new run)",
        metavar="RUN_DIR",
    )
    output: str | None = opt(None, "run folder (default: runs/<timestamp>)", metavar="RUN_DIR")
    with_world_model: bool = opt(False, "also run train_world_model.py")
    config: str | None = opt(
        None,
        "YAML file with one section per tool, given to every stage "
        "(default: ./config.yml if it exists)",
        metavar="PATH",
    )
    cores: int | None = opt(
        None,
        "core count (default: RLKIT_CORES, else nproc)",
        bounds=f"[1, {MAX_CORES}]",
    )
    collect_workers: int | None = opt(
        None, _workers_help("collection processes", "collect"), bounds=f"[1, {MAX_WORKERS}]"
    )
    bc_workers: int | None = opt(
        None, _workers_help("BC DataLoader workers", "bc"), bounds=f"[1, {MAX_WORKERS}]"
    )
    rl_envs: int | None = opt(
        None, _workers_help("RL subprocess envs", "rl"), bounds=f"[1, {MAX_WORKERS}]"
    )
    seeds: int | None = opt(
        None,
        "train the RL stage with N seeds (0 .. N-1) from the same BC policy, in "
        "parallel processes, and report their mean, IQM and 95% bootstrap CI "
        "(default: one run, the rl section's seed)",
        metavar="N",
        bounds=f"[1, {MAX_SEEDS}]",
    )
    executor: Literal["local", "ray"] = opt(
        "local",
        "ray: collect and train the --seeds as Ray tasks on the cluster at "
        "RAY_ADDRESS (else a Ray instance on this machine); needs pip install 'rlkit[ray]'",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.resume is not None:
            allowed = {"resume", "cores"}  # cores: checked, as RLKIT_CORES is, then unused
            given = [
                f.name
                for f in fields(self)
                if f.name not in allowed and getattr(self, f.name) != f.default
            ]
            if given:
                raise ValueError(
                    "--resume repeats the run's own settings (saved in pipeline.json); "
                    "pass only --resume RUN_DIR"
                )
