"""The whole pipeline in one command, timed: collect -> BC -> RL (-> world model).

``train_optimized.sh`` detects the cores with ``nproc`` and runs ``python -m rlkit.pipeline``.
Each stage is a tool of this rlkit (``python -m rlkit.cli.<tool>``), run as a child process
whose output goes to the terminal and to ``RUN/logs/<stage>.log``; each reads the previous
stage's output in the run folder::

    RUN/demos/          collect_demonstrations.py   (LeRobot dataset)
    RUN/bc/             train_bc.py --data RUN/demos
    RUN/rl/             train_rl.py --init-from RUN/bc   (+ RUN/lap.gif, RUN/learning_curve.png)
    RUN/world_model/    train_world_model.py RUN/world_model_episodes RUN/world_model
                        (with --with-world-model; pixel episodes of its own env)
    RUN/pipeline.json   settings and the state of every stage (what --resume reads)
    RUN/summary.json    measured wall time, throughput and result of every stage
    RUN/summary.md      the same as tables

Settings come from ``config.yml`` as for every tool; the pipeline only sets the folders, the
worker counts and (``--quick``) small sizes. Flags after ``--`` go to every stage that has
them (``-- --seed 3 --epochs 20 --algo sac``). ``--resume RUN`` skips finished stages and
resumes the interrupted one with its own ``--resume``.

Nothing lost, nothing silent:

- every stage's settings (config.yml and the flags after ``--``) are checked before the first
  stage starts, also on ``--resume``: a bad key or value stops the run with exit code 2;
- the run folder is locked (``RUN/.rlkit.lock``) while a pipeline process writes it;
- a stage runs in its own process group and dies with the pipeline: the kernel kills it when
  the pipeline process dies, even by SIGKILL (Linux: ``PR_SET_PDEATHSIG``); SIGTERM and
  SIGHUP are passed on to the stage's group, Ctrl-Z stops and ``fg`` continues it too;
- Ctrl-C reaches the stage exactly once (the stage saves what it can and exits), then the
  pipeline prints one line and exits with code 130; a second Ctrl-C kills the stage.

Modules: :mod:`~rlkit.pipeline.stages` (the stages, ``--`` routing, worker counts, the plan
and the settings check), :mod:`~rlkit.pipeline.process` (a stage's process: logging, signals,
dying with the pipeline), :mod:`~rlkit.pipeline.summary` (``summary.json``, ``summary.md``);
this module runs the stages in order and holds the command line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rlkit.cluster import EXECUTORS, check_executor
from rlkit.pipeline.process import run_logged
from rlkit.pipeline.stages import (
    CHAIN_FLAGS,
    MAX_CORES,
    MAX_SEEDS,
    MAX_WORKERS,
    PROG,
    STAGES,
    STATE_FILE,
    PipelineError,
    Plan,
    Stage,
    check_stages,
    derive_workers,
    open_run,
    parallelism,
    parse_stage,
    resolve_cores,
    route_passthrough,
    stage_argv,
)
from rlkit.pipeline.summary import build_summary, summary_markdown
from rlkit.rundir import RunLock
from rlkit.utils import write_json_atomic, write_text_atomic

__all__ = [
    "CHAIN_FLAGS",
    "MAX_CORES",
    "MAX_SEEDS",
    "MAX_WORKERS",
    "PROG",
    "STAGES",
    "STATE_FILE",
    "PipelineError",
    "Plan",
    "Stage",
    "build_arg_parser",
    "build_summary",
    "check_stages",
    "derive_workers",
    "main",
    "open_run",
    "parallelism",
    "parse_stage",
    "resolve_cores",
    "route_passthrough",
    "run_pipeline",
    "stage_argv",
    "summary_markdown",
]


def run_pipeline(plan: Plan, resume: bool) -> dict[str, Any]:
    """Run every unfinished stage in order; returns the summary (also written to the run).

    The caller holds the run folder's lock (:func:`open_run`).
    """
    stages = plan.stage_list
    routed = route_passthrough(plan.passthrough, stages)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.save()
    for stage in stages:
        state = plan.stages.get(stage.name, {})
        if state.get("status") == "done":
            print(f"\n== {stage.name}: done in an earlier run ({state['wall_s']:.1f} s), skipped")
            continue
        args = stage_argv(plan, stage, routed[stage.name], resume)
        cmd = [sys.executable, "-m", stage.module, *args]
        log = plan.run_dir / "logs" / f"{stage.name}.log"
        print(f"\n== {stage.name}: {stage.script} {' '.join(args)}", flush=True)
        resumed = state.get("status") in ("running", "interrupted", "failed")
        plan.stages[stage.name] = {"status": "running", "log": str(log), "resumed": resumed}
        plan.save()
        t0 = time.perf_counter()
        code, sig = run_logged(cmd, log, stage.name)
        wall = time.perf_counter() - t0
        if code == 0:
            plan.stages[stage.name].update(status="done", wall_s=wall)
        elif sig is not None:
            plan.stages[stage.name].update(status="interrupted", exit_code=code, wall_s=wall)
        else:
            plan.stages[stage.name].update(status="failed", exit_code=code, wall_s=wall)
        plan.save()
        if sig is not None:
            name = signal.Signals(sig).name
            what = "interrupted" if sig == signal.SIGINT else f"stopped by {name}"
            when = "after" if code == 0 else "during"
            raise PipelineError(
                f"{what} {when} stage '{stage.name}'; resume with "
                f"./train_optimized.sh --resume {plan.run_dir}",
                code=128 + sig,
            )
        if code != 0:
            raise PipelineError(
                f"stage '{stage.name}' failed (exit code {code}); its log: {log}\n"
                f"fix the cause, then: ./train_optimized.sh --resume {plan.run_dir}",
                code=1,
            )
        resume = True  # a later stage may hold output of an interrupted earlier attempt
    for name in ("learning_curve.png", "learning_curves.png"):  # one run / --seeds
        curve = plan.run_dir / "rl" / name
        if curve.is_file():
            shutil.copyfile(curve, plan.run_dir / name)
    summary = build_summary(plan)
    write_json_atomic(plan.run_dir / "summary.json", summary)
    md = summary_markdown(summary)
    write_text_atomic(plan.run_dir / "summary.md", md)
    print("\n" + md)
    return summary


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

DESCRIPTION = """\
Run the whole rlkit pipeline -- collect_demonstrations.py -> train_bc.py -> train_rl.py
(-> train_world_model.py) -- in one run folder, with worker counts derived from the cores,
and print the measured wall time, throughput and result of every stage."""

EPILOG = """\
worker counts: flag > environment variable (RLKIT_COLLECT_WORKERS, RLKIT_BC_WORKERS,
RLKIT_RL_ENVS) > the seeds' formulas on the core count (RLKIT_CORES or nproc).
settings: config.yml, as for every tool; flags after -- go to every stage that has them,
e.g.  ./train_optimized.sh -- --seed 3 --epochs 20 --algo sac
presets: default = config.yml sizes (the seeds' 100 episodes, 50 epochs, 500k timesteps);
--quick = 20 episodes, 10 epochs, 60k timesteps (35 s measured on 2 cores; see README.md).
run folder: locked while a pipeline writes it; stages die with the pipeline; Ctrl-C stops the
running stage (it saves what it can), then --resume RUN_DIR continues."""


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes: ~35 s on 2 cores")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--output", metavar="RUN_DIR", help="run folder (default: runs/<timestamp>)")
    p.add_argument("--with-world-model", action="store_true", help="also run train_world_model.py")
    p.add_argument(
        "--cores", type=int, help=f"core count, 1 to {MAX_CORES} (default: RLKIT_CORES, else nproc)"
    )
    p.add_argument("--collect-workers", type=int, help=f"collection processes (1 to {MAX_WORKERS})")
    p.add_argument("--bc-workers", type=int, help=f"BC DataLoader workers (1 to {MAX_WORKERS})")
    p.add_argument("--rl-envs", type=int, help=f"RL subprocess envs (1 to {MAX_WORKERS})")
    p.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="train the RL stage with N seeds (0 .. N-1) from the same BC policy, in parallel "
        "processes, and report their mean, IQM and 95%% bootstrap CI",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="ray: collect and train the --seeds as Ray tasks on the cluster at RAY_ADDRESS "
        "(else a Ray instance on this machine); needs pip install 'rlkit[ray]'",
    )
    return p


def _plan_from_args(args: argparse.Namespace, passthrough: list[str]) -> Plan:
    """A new run's plan from the command line (nothing is written yet)."""
    cores = resolve_cores(args.cores, dict(os.environ))
    workers, sources = derive_workers(
        cores,
        {"collect": args.collect_workers, "bc": args.bc_workers, "rl": args.rl_envs},
        dict(os.environ),
    )
    if args.output:
        run_dir = Path(args.output)
    else:
        run_dir = Path("runs").resolve() / time.strftime("%Y%m%d-%H%M%S")
    if (run_dir / STATE_FILE).exists():
        raise PipelineError(
            f"{run_dir} already holds a run; --resume {run_dir} continues it, "
            "or choose another --output"
        )
    if args.seeds is not None and not 1 <= args.seeds <= MAX_SEEDS:
        raise PipelineError(f"--seeds must be between 1 and {MAX_SEEDS}, got {args.seeds}")
    if args.seeds is not None and any(a.split("=")[0] == "--seeds" for a in passthrough):
        raise PipelineError("--seeds N is given twice (before and after --); pass it once")
    plan = Plan(run_dir, cores, workers, sources, args.quick, args.with_world_model, passthrough)
    try:
        check_executor(args.executor)
    except ValueError as e:
        raise PipelineError(str(e)) from None
    plan.seeds, plan.executor = args.seeds, args.executor
    return plan


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    if "--" in args_in:
        cut = args_in.index("--")
        own, passthrough = args_in[:cut], args_in[cut + 1 :]
    else:
        own, passthrough = args_in, []
    args = build_arg_parser().parse_args(own)
    lock: RunLock | None = None
    plan: Plan | None = None
    try:
        if args.resume:
            counts = (args.collect_workers, args.bc_workers, args.rl_envs, args.seeds)
            flags = (
                args.quick,
                args.output,
                args.with_world_model,
                passthrough,
                args.executor != "local",
            )
            if any(flags) or any(n is not None for n in counts):
                raise PipelineError(
                    "--resume repeats the run's own settings (saved in pipeline.json); "
                    "pass only --resume RUN_DIR"
                )
            resolve_cores(args.cores, dict(os.environ))  # a bad RLKIT_CORES is an error anyway
            run_dir = Path(args.resume)
            if (run_dir / STATE_FILE).is_file():
                lock = open_run(run_dir)  # before reading: another process may be writing it
            plan = Plan.load(run_dir)
        else:
            plan = _plan_from_args(args, passthrough)
        # every stage's settings, before the first stage starts (also on --resume)
        check_stages(plan, route_passthrough(plan.passthrough, plan.stage_list))
        if lock is None:
            lock = open_run(plan.run_dir)
            if (plan.run_dir / STATE_FILE).exists():  # made since the check above
                raise PipelineError(
                    f"{plan.run_dir} already holds a run; --resume {plan.run_dir} continues it"
                )
        print(f"cores: {plan.cores}")
        for line in parallelism(plan, route_passthrough(plan.passthrough, plan.stage_list)):
            print(f"  {line}")
        print(f"run folder: {plan.run_dir}", flush=True)
        run_pipeline(plan, resume=bool(args.resume))
    except PipelineError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:  # Ctrl-C outside a stage (between stages, at the summary)
        if lock is not None and plan is not None and (plan.run_dir / STATE_FILE).is_file():
            hint = f"; resume with ./train_optimized.sh --resume {plan.run_dir}"
        else:
            hint = "; nothing was started"
        print(f"\n{PROG}: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        if lock is not None:
            lock.release()
    return 0
