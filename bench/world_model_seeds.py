"""``bench_world_model.py --seeds S [S ...]``: N seeds of a budgeted world-model run, then
each seed's planner on the same evaluation episodes, and the mean, IQM and 95 % bootstrap CI
across the seeds (:mod:`rlkit.aggregate`, as the RL side reports).

Each seed is ``python -m rlkit.cli.train_world_model WORK/seed_S/data WORK/seed_S/run --seed S
--max-minutes M --threads T`` (plus ``--wm-args``): the budget is wall clock from the process
start, seed episodes included. ``--parallel P`` seeds run at once with ``cores / P`` torch
threads each (default 1: every seed has the whole machine, one after another). Each seed's
output goes to ``WORK/logs/seed_S.log``; its lines are printed prefixed ``seed S |``.

``--work DIR`` keeps the runs (default: a new folder under /tmp, printed and kept); rerun with
the same ``--work`` to evaluate again: a seed whose run finished (``result.json``) is not
trained again, one that did not is an error naming its folder. A failed seed stops the
bench with its seed, exit code and log; the finished seeds stay on disk.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from world_model_learning import baselines, evaluate_run, learning_curve, run_config

from rlkit.aggregate import summarize
from rlkit.utils import available_cores

__all__ = ["seeds_run"]

#: Default budget per seed, minutes (issue 18's must-hold settings).
DEFAULT_MINUTES = {"pendulum": 30.0, "racing": 60.0}
#: Default train_world_model.py flags per env: racing is measured from the ego camera (the
#: road ahead in the same place on every track; docs/world-model.md#learning).
DEFAULT_WM_ARGS = {"pendulum": "", "racing": "--camera-view ego"}
#: Pendulum goals: the mean over seeds and the worst seed.
PENDULUM_MEAN_GOAL, PENDULUM_WORST_GOAL = -400.0, -600.0


def _train(seed: int, work: Path, args: argparse.Namespace, threads: int) -> int:
    """One seed's budgeted run (skipped when it finished before); its exit code."""
    folder = work / f"seed_{seed}"
    run, log = folder / "run", work / "logs" / f"seed_{seed}.log"
    if (run / "result.json").is_file():
        print(f"seed {seed} | finished before ({run}); not trained again", flush=True)
        return 0
    if folder.exists():
        raise SystemExit(
            f"{folder} holds an unfinished run of seed {seed}; remove it to train the seed "
            "again (a resumed budgeted run would get a second budget)"
        )
    cmd = [sys.executable, "-m", "rlkit.cli.train_world_model", str(folder / "data"), str(run)]
    cmd += ["--env", args.env, "--seed", str(seed), "--max-minutes", f"{args.minutes:g}"]
    cmd += ["--threads", str(threads), *shlex.split(args.wm_args)]
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"seed {seed} | $ {' '.join(cmd[1:])}", flush=True)
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            f.flush()
            print(f"seed {seed} | {line.rstrip()}", flush=True)
        return proc.wait()


def _parallel(args: argparse.Namespace, seeds: list[int]) -> int:
    """Seeds trained at once."""
    return max(1, min(args.parallel, len(seeds)))


def _threads(args: argparse.Namespace, seeds: list[int]) -> int:
    """Torch threads per seed: the cores shared by the seeds trained at once."""
    return max(1, available_cores() // _parallel(args, seeds))


def _train_all(seeds: list[int], work: Path, args: argparse.Namespace) -> None:
    parallel = _parallel(args, seeds)
    threads = _threads(args, seeds)
    failed: list[str] = []
    lock = threading.Lock()

    def one(seed: int) -> None:
        code = _train(seed, work, args, threads)
        if code != 0:
            with lock:
                failed.append(
                    f"seed {seed} failed (exit code {code}); its log: {work}/logs/seed_{seed}.log"
                )

    with cf.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, seeds))
    if failed:
        raise SystemExit("\n".join(failed) + f"\nthe finished seeds stay in {work}")


def _result_row(seed: int, run: Path, ev: dict[str, Any]) -> dict[str, Any]:
    result = json.loads((run / "result.json").read_text())
    row = {
        "seed": seed,
        "return": ev["planner"]["mean"],
        "returns": ev["planner"]["returns"],
        "train_steps": result["train_steps"],
        "batches_per_s": result["batches_per_s"],
        "episodes": result["episodes"],
        "checkpoint": ev["checkpoint"],
        "checkpoint_minutes": ev["checkpoint_minutes_after_start"],
    }
    if "lap_rate" in ev["planner"]:
        row["lap_rate"] = ev["planner"]["lap_rate"]
        row["laps"] = ev["planner"]["laps"]
    return row


def seeds_run(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or find) every seed's run, evaluate them and the baselines; the report."""
    seeds = list(dict.fromkeys(args.seeds))
    if args.minutes is None:
        args.minutes = DEFAULT_MINUTES[args.env]
    if args.wm_args is None:
        args.wm_args = DEFAULT_WM_ARGS[args.env]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="rlkit-bench-wm-"))
    print(f"runs in {work} (kept)", flush=True)
    t0 = time.perf_counter()
    _train_all(seeds, work, args)
    train_wall = time.perf_counter() - t0

    runs = {s: work / f"seed_{s}" / "run" for s in seeds}
    cfg = run_config(runs[seeds[0]])
    jobs = min(len(seeds) + 1, available_cores())  # training is over: every core evaluates
    print(f"evaluating {len(seeds)} seeds and the baselines on {args.eval_episodes} episodes "
          f"({jobs} processes) ...", flush=True)  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        base_f = pool.submit(baselines, cfg, args.eval_episodes, args.bc_policy)
        evals = {s: pool.submit(evaluate_run, runs[s], args.eval_episodes) for s in seeds}
        base = base_f.result()
        rows = [_result_row(s, runs[s], evals[s].result()) for s in seeds]

    agg = {"return": summarize([r["return"] for r in rows])}
    if cfg.env == "racing":
        agg["lap_rate"] = summarize([r["lap_rate"] for r in rows])
    report: dict[str, Any] = {
        "settings": {
            "env": args.env,
            "seeds": seeds,
            "minutes_per_seed": args.minutes,
            "parallel": args.parallel,
            "threads_per_seed": _threads(args, seeds),
            "eval_episodes": args.eval_episodes,
            "wm_args": args.wm_args,
            "work": str(work),
        },
        "train_wall_s": train_wall,
        "per_seed": rows,
        "aggregate": agg,
        "baselines": base,
        "curves": {str(s): learning_curve(runs[s]) for s in seeds},
    }
    mean, worst = agg["return"]["mean"], min(r["return"] for r in rows)
    random_mean = base["random"]["mean"]
    if "perfect_model" in base:
        gap = base["perfect_model"]["mean"] - random_mean
        report["gap_closed"] = (mean - random_mean) / gap if gap else math.nan
    default_args = shlex.split(DEFAULT_WM_ARGS[args.env])
    if shlex.split(args.wm_args) != default_args or args.minutes != DEFAULT_MINUTES[args.env]:
        report["goals"] = {}  # the goals are set for the default run and budget only
    elif cfg.env == "pendulum":
        report["goals"] = {
            f"mean >= {PENDULUM_MEAN_GOAL:g}": mean >= PENDULUM_MEAN_GOAL,
            f"worst seed >= {PENDULUM_WORST_GOAL:g}": worst >= PENDULUM_WORST_GOAL,
        }
    else:
        report["goals"] = {
            "CI of the mean above the random policy": agg["return"]["ci_low"] > random_mean
        }
    return report


def print_seeds(report: dict[str, Any]) -> None:
    st, agg, base = report["settings"], report["aggregate"], report["baselines"]
    print(f"\n{st['env']}, {len(st['seeds'])} seeds x {st['minutes_per_seed']:g} min "
          f"({st['threads_per_seed']} threads each, {st['parallel']} at once); "
          f"{st['eval_episodes']} evaluation episodes, the same for every seed")  # fmt: skip
    racing = st["env"] == "racing"
    head = f"{'seed':>5} {'return':>9} {'grad steps':>10} {'batches/s':>9} {'episodes':>8}"
    print(head + (f" {'lap rate':>8}" if racing else ""))
    for r in report["per_seed"]:
        line = (f"{r['seed']:>5} {r['return']:>9.1f} {r['train_steps']:>10} "
                f"{r['batches_per_s']:>9.2f} {r['episodes']:>8}")  # fmt: skip
        print(line + (f" {100 * r['lap_rate']:>7.0f}%" if racing else ""))
    a = agg["return"]
    worst = min(r["return"] for r in report["per_seed"])
    print(f"planner + learned model: mean {a['mean']:.1f} [95% CI {a['ci_low']:.1f} .. "
          f"{a['ci_high']:.1f}], IQM {a['iqm']:.1f}, worst seed {worst:.1f}")  # fmt: skip
    for name, b in base.items():
        laps = f", lap rate {100 * b['lap_rate']:.0f}%" if "lap_rate" in b else ""
        print(f"{name.replace('_', ' ')}: mean {b['mean']:.1f}{laps}")
    if "gap_closed" in report:
        print(f"random -> perfect-model gap closed: {100 * report['gap_closed']:.0f}%")
    if not report["goals"]:
        print("goals not judged: they hold for the default settings and budget only")
    for goal, met in report["goals"].items():
        print(f"goal {goal}: {'met' if met else 'NOT met'}")
