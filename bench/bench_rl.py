"""Benchmark: RL throughput per vectorisation, and time-to-expert from BC vs from scratch.

1. Throughput: env-steps/s of ``model.learn`` for PPO and SAC with ``--vec subproc --envs 2``
   (SB3's SubprocVecEnv, the seeds' setup) and ``--vec batched`` with 16 and 64 cars
   (``RacingVecEnv``), each for ``--throughput-seconds`` of training after a warm-up.
   SAC does one gradient step per environment step in every setting (same update-to-data
   ratio), so its figure is dominated by the updates; PPO's by the environment.
2. Quality and time: ``train_rl`` from the BC export (``--init-from``) and from scratch, for
   ``--minutes`` each, evaluating every ``--eval-every`` env steps on held-out tracks. Reported:
   wall time until the RL policy's mean return reaches the expert's, and until its mean lap
   time beats the expert's (both on the same tracks).

3. ``--seeds N``: instead of 1 and 2, the default pipeline (``python -m rlkit.pipeline --seeds
   N``, what ``./train_optimized.sh --seeds N`` runs) and its must-hold figures across the
   seeds, each with its 95 % bootstrap CI: the final policy's laps and crashes on the test
   tracks, its return against the selected checkpoint's, its lap time against the expert's,
   and the median time to the expert's lap time.

Usage::

    python bench/bench_rl.py                      # ~35 min on 2 cores -> bench/results/local/
    python bench/bench_rl.py --write-results      # -> bench/results/ (tracked)
    python bench/bench_rl.py --quick              # smoke run
    python bench/bench_rl.py --seeds 5 --algo ppo # the pipeline, 5 seeds (~19 min on 2 cores)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import add_output_args, output_path, report_header, write_json  # noqa: E402

from rlkit.bc import BCConfig, train_bc  # noqa: E402
from rlkit.collect import CollectConfig, collect  # noqa: E402
from rlkit.envs.sim import RacingConfig  # noqa: E402
from rlkit.rl import RLConfig, build_model, make_vec_env, train_rl  # noqa: E402
from rlkit.rollout import evaluate, expert_driver  # noqa: E402


def throughput(algo: str, vec: str, envs: int, seconds: float) -> dict[str, Any]:
    """env-steps/s of model.learn over ``seconds`` (after a short warm-up)."""
    import torch

    torch.set_num_threads(1)
    ppo = {"n_steps": 128} if algo == "ppo" else {}  # only PPO reads n_steps
    cfg = RLConfig(algo=algo, vec=vec, envs=envs, learning_starts=0, **ppo)
    env = make_vec_env(cfg, RacingConfig())
    try:
        model = build_model(cfg, env, None, "cpu")
        # PPO learns in rollouts of n_steps per env; SAC (one gradient step per env step,
        # ~65/s here) in small chunks so the timed window does not overshoot.
        chunk = envs * (cfg.n_steps if algo == "ppo" else 16)
        model.learn(total_timesteps=chunk)  # warm-up: buffers, first rollout
        steps = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.learn(total_timesteps=chunk, reset_num_timesteps=False)
            steps += chunk
        dt = time.perf_counter() - t0
    finally:
        env.close()
    return {
        "algo": algo,
        "vec": vec,
        "envs": envs,
        "env_steps": steps,
        "seconds": dt,
        "env_steps_per_s": steps / dt,
    }


def time_to_expert(curve: Path, expert_return: float, expert_lap: float) -> dict[str, Any]:
    rows = list(csv.DictReader(curve.open()))
    reach = next((r for r in rows if float(r["mean_return"]) >= expert_return), None)
    faster = next(
        (
            r
            for r in rows
            if r["lap_time"] and float(r["lap_rate"]) >= 0.99 and float(r["lap_time"]) < expert_lap
        ),
        None,
    )

    def point(r: dict[str, str] | None) -> dict[str, float] | None:
        return (
            None if r is None else {"env_steps": int(r["env_steps"]), "wall_s": float(r["wall_s"])}
        )

    return {
        "reach_expert_return": point(reach),
        "beat_expert_lap_time": point(faster),
        "curve": [{k: (float(v) if v else None) for k, v in r.items()} for r in rows],
    }


#: The must-hold figures of the multi-seed run: (metric of aggregate.json, statistic, goal).
GOALS: tuple[tuple[str, str, str, Any], ...] = (
    ("final policy: laps completed", "rl_final.lap_rate", "mean", lambda v: v >= 0.99),
    ("final policy: left the track", "rl_final.crash_rate", "mean", lambda v: v <= 0.01),
    (
        "final return within 3 % of the selected",
        "final_vs_selected_return",
        "mean",
        lambda v: v >= 0.97,
    ),
    ("final lap time / expert's", "rl_final.lap_time_vs_expert", "mean", lambda v: v <= 0.85),
    ("time to the expert's lap time", "time_to_expert_lap_s", "median", lambda v: v < 120),
)
GOAL_TEXT = {
    "rl_final.lap_rate": ">= 99 %",
    "rl_final.crash_rate": "<= 1 %",
    "final_vs_selected_return": ">= 0.97",
    "rl_final.lap_time_vs_expert": "<= 0.85",
    "time_to_expert_lap_s": "< 120 s",
}


def seeds_run(args: argparse.Namespace, t_start: float) -> int:
    """``--seeds N``: the default pipeline (``python -m rlkit.pipeline``, what
    ``./train_optimized.sh`` runs) with ``--seeds N``; the must-hold figures from its
    ``rl/aggregate.json``."""
    rl_args = ["--algo", args.algo, *args.rl_args.split()]
    with tempfile.TemporaryDirectory(prefix="rlkit-bench-seeds-") as td:
        run = Path(td) / "run"
        cmd = [sys.executable, "-m", "rlkit.pipeline", "--output", str(run)]
        cmd += ["--seeds", str(args.seeds), "--", *rl_args]
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        # the pipeline's progress as it runs (its stages print a line at least every 10 s)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"pipeline | {line}", end="", file=sys.stderr, flush=True)
        if proc.wait() != 0:
            print(f"the pipeline failed with exit code {proc.returncode}", file=sys.stderr)
            return proc.returncode
        wall = time.perf_counter() - t0
        summary = json.loads((run / "summary.json").read_text())
        agg = json.loads((run / "rl" / "aggregate.json").read_text())
        curves = run / "rl" / "learning_curves.png"
        png = output_path(args, f"bench_rl_seeds_{args.algo}").with_suffix(".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(curves, png)
    rows = []
    for label, key, stat, ok in GOALS:
        m = agg["metrics"].get(key)
        value = None if m is None else m[stat]
        rows.append(
            {
                "goal": label,
                "metric": key,
                "statistic": stat,
                "value": value,
                "ci": None if m is None else [m["ci_low"], m["ci_high"]],
                "per_seed": None if m is None else m["values"],
                "target": GOAL_TEXT[key],
                "met": value is not None and math.isfinite(value) and bool(ok(value)),
            }
        )
    stages = {s["stage"]: s["wall_s"] for s in summary["stages"]}
    print(f"\n{args.algo.upper()}, {args.seeds} seeds, pipeline {wall:.0f} s "
          f"(collect {stages['collect']:.0f} s, BC {stages['bc']:.0f} s, RL {stages['rl']:.0f} s); "
          f"{agg['test_episodes']} test tracks")  # fmt: skip
    print(f"{'goal':<42} {'stat':<6} {'value':>8}  {'95% CI':<20} {'target':<8} met")
    for r in rows:
        v = "-" if r["value"] is None else f"{r['value']:.4g}"
        ci = "-" if r["ci"] is None or None in r["ci"] else f"{r['ci'][0]:.4g} .. {r['ci'][1]:.4g}"
        print(f"{r['goal']:<42} {r['statistic']:<6} {v:>8}  {ci:<20} {r['target']:<8} "
              f"{'yes' if r['met'] else 'NO'}")  # fmt: skip
    report = {
        **report_header("bench_rl", t_start),
        "mode": "seeds",
        "command": " ".join(cmd[2:]),
        "settings": {"algo": args.algo, "seeds": args.seeds, "rl_args": rl_args},
        "pipeline_wall_s": wall,
        "stage_wall_s": stages,
        "goals": rows,
        "aggregate": agg,
        "learning_curves_png": str(png),
    }
    out = output_path(args, f"bench_rl_seeds_{args.algo}")
    write_json(out, report)
    print(f"\nwrote {out} and {png}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--algo", default="sac", choices=["sac", "ppo", "td3"], help="for part 2")
    p.add_argument("--cars", type=int, default=16, help="batched cars for part 2")
    p.add_argument("--minutes", type=float, default=None, help="budget per part-2 run (15)")
    p.add_argument("--eval-every", type=int, default=None, help="env steps (10000)")
    p.add_argument("--eval-episodes", type=int, default=None, help="held-out tracks (30)")
    p.add_argument("--throughput-seconds", type=float, default=None, help="per setting (20)")
    p.add_argument("--skip-scratch", action="store_true", help="only the run from BC")
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="instead: the default pipeline with --seeds N, and its must-hold figures "
        "(-> bench_rl_seeds_<algo>.json and .png)",
    )
    p.add_argument(
        "--rl-args",
        default="",
        help="--seeds: more train_rl.py flags for the pipeline's RL stage, e.g. "
        "'--timesteps 60000'",
    )
    add_output_args(p, "bench_rl")
    args = p.parse_args()
    if args.seeds is not None:
        return seeds_run(args, time.perf_counter())
    minutes = args.minutes or (0.3 if args.quick else 15.0)
    eval_every = args.eval_every or (500 if args.quick else 10_000)
    eval_episodes = args.eval_episodes or (3 if args.quick else 30)
    tp_seconds = args.throughput_seconds or (2.0 if args.quick else 20.0)
    t_start = time.perf_counter()

    settings = [
        ("ppo", "subproc", 2),
        ("ppo", "batched", 16),
        ("ppo", "batched", 64),
        ("sac", "subproc", 2),
        ("sac", "batched", 16),
        ("sac", "batched", 64),
    ]
    tp = []
    for algo, vec, envs in settings:
        print(f"throughput {algo} {vec} {envs} ...", file=sys.stderr)
        tp.append(throughput(algo, vec, envs, tp_seconds))

    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rlkit-bench-rl-") as td:
        tmp = Path(td)
        demos, bc = tmp / "demos", tmp / "bc"
        n_demo = 10 if args.quick else 100
        collect(CollectConfig(episodes=n_demo, output=str(demos)), progress=False)
        train_bc(
            BCConfig(
                data=str(demos), output=str(bc), eval_episodes=0, epochs=3 if args.quick else 50
            ),
            progress=False,
        )
        env_config = RacingConfig()
        expert = evaluate(expert_driver(), env_config, eval_episodes, seed=0)
        starts = {"from_bc": {"init_from": str(bc), "demos": str(demos)}}
        if not args.skip_scratch:
            starts["from_scratch"] = {}
        for name, extra in starts.items():
            print(f"{name}: {args.algo}, {minutes} min ...", file=sys.stderr)
            out = tmp / name
            # A wall-clock budget, not a step count: there is no end for the default std
            # schedule to anneal to, so PPO learns its std on the whole road, as measured
            # before those defaults (the defaults' time to the expert: --seeds).
            ppo = args.algo == "ppo"
            cfg = RLConfig(
                algo=args.algo,
                envs=args.cars,
                timesteps=10**9,
                learn_std=ppo,
                train_edge=1.0,
                output=str(out),
                eval_every=eval_every,
                eval_episodes=eval_episodes,
                checkpoint_every=0,
                max_minutes=minutes,
                **extra,
            )
            train_rl(cfg, progress=False)
            runs[name] = time_to_expert(
                out / "learning_curve.csv", expert.mean_return, expert.mean_lap_time
            )

    print(f"\nRL throughput (model.learn, env-steps/s, {tp_seconds:.0f} s each, 1 torch thread)")
    print(f"{'algo':<5} {'vec':<8} {'envs':>5} {'env-steps/s':>12}")
    for r in tp:
        print(f"{r['algo']:<5} {r['vec']:<8} {r['envs']:>5} {r['env_steps_per_s']:>12,.0f}")
    print(
        f"\nexpert on {eval_episodes} held-out tracks: return {expert.mean_return:.1f}, "
        f"lap {expert.mean_lap_time:.2f} s"
    )

    def when(point: dict[str, float] | None) -> str:
        return (
            "never"
            if point is None
            else f"{point['wall_s']:.0f} s ({point['env_steps']:,.0f} steps)"
        )

    for name, r in runs.items():
        best = max(r["curve"], key=lambda c: c["mean_return"])
        print(
            f"{name:<13} expert return reached: {when(r['reach_expert_return'])}; expert lap time "
            f"beaten: {when(r['beat_expert_lap_time'])}; best return {best['mean_return']:.1f}"
        )
    report = {
        **report_header("bench_rl", t_start),
        "settings": {
            "quick": args.quick,
            "algo": args.algo,
            "cars": args.cars,
            "minutes": minutes,
            "eval_every": eval_every,
            "eval_episodes": eval_episodes,
        },
        "throughput": tp,
        "expert": expert.to_dict(),
        "runs": runs,
    }
    out = output_path(args, "bench_rl")
    write_json(out, report)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
