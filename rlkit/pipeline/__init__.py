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
dying with the pipeline), :mod:`~rlkit.pipeline.summary` (``summary.json``, ``summary.md``),
:mod:`~rlkit.pipeline.options` (the command line, a dataclass like every tool's options);
this module runs the stages in order.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rlkit.cluster import check_executor
from rlkit.config import ConfigError, parse_config
from rlkit.pipeline.options import (
    DESCRIPTION,
    EPILOG,
    MAX_CORES,
    MAX_SEEDS,
    MAX_WORKERS,
    PipelineOptions,
)
from rlkit.pipeline.process import run_logged
from rlkit.pipeline.stages import (
    CHAIN_FLAGS,
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
    "PipelineOptions",
    "Plan",
    "Stage",
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


def _plan_from_args(opts: PipelineOptions, passthrough: list[str]) -> Plan:
    """A new run's plan from the command line (nothing is written yet)."""
    cores = resolve_cores(opts.cores, dict(os.environ))
    workers, sources = derive_workers(
        cores,
        {"collect": opts.collect_workers, "bc": opts.bc_workers, "rl": opts.rl_envs},
        dict(os.environ),
    )
    if opts.output:
        run_dir = Path(opts.output)
    else:
        run_dir = Path("runs").resolve() / time.strftime("%Y%m%d-%H%M%S")
    if (run_dir / STATE_FILE).exists():
        raise PipelineError(
            f"{run_dir} already holds a run; --resume {run_dir} continues it, "
            "or choose another --output"
        )
    given_after = {a.split("=")[0] for a in passthrough}
    for flag, value in (("--seeds", opts.seeds), ("--config", opts.config)):
        if value is not None and flag in given_after:
            raise PipelineError(f"{flag} is given twice (before and after --); pass it once")
    if opts.config is not None:  # every stage reads its section of it, also on --resume
        passthrough = ["--config", str(Path(opts.config).resolve()), *passthrough]
    plan = Plan(run_dir, cores, workers, sources, opts.quick, opts.with_world_model, passthrough)
    try:
        check_executor(opts.executor)
    except ValueError as e:
        raise PipelineError(str(e)) from None
    plan.seeds, plan.executor = opts.seeds, opts.executor
    return plan


def main(argv: list[str] | None = None) -> int:
    """Run or resume the pipeline; exit 0 when every stage finished, 1 when one failed, 2 for
    bad settings, 128 + N when stopped by signal N."""
    args_in = sys.argv[1:] if argv is None else list(argv)
    if "--" in args_in:
        cut = args_in.index("--")
        own, passthrough = args_in[:cut], args_in[cut + 1 :]
    else:
        own, passthrough = args_in, []
    try:
        opts = parse_config(
            PipelineOptions, None, own, prog=PROG, description=DESCRIPTION, epilog=EPILOG
        )
    except ConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    lock: RunLock | None = None
    plan: Plan | None = None
    try:
        if opts.resume is not None:
            if passthrough:
                raise PipelineError(
                    "--resume repeats the run's own settings (saved in pipeline.json), also "
                    "the flags after --; pass only --resume RUN_DIR"
                )
            resolve_cores(opts.cores, dict(os.environ))  # a bad RLKIT_CORES is an error anyway
            run_dir = Path(opts.resume)
            if (run_dir / STATE_FILE).is_file():
                lock = open_run(run_dir)  # before reading: another process may be writing it
            plan = Plan.load(run_dir)
        else:
            plan = _plan_from_args(opts, passthrough)
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
        run_pipeline(plan, resume=opts.resume is not None)
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
