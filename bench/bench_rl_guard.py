"""Benchmark: guards against the collapse of SAC/TD3 right after switching from BC to RL.

Collects ``--episodes`` demonstrations, trains BC (``train_bc.py`` defaults), then runs
``train_rl.py --algo ALGO --init-from BC --demos DEMOS`` once per guard setting for
``--steps`` environment steps, evaluating on ``--eval-episodes`` held-out tracks every
``--eval-every`` steps. Reported per setting: the BC policy's return (step 0), the lowest
and the last evaluated return. Quality is compared at equal environment steps, so the result
does not depend on how busy the machine is.

Usage::

    python bench/bench_rl_guard.py           # ~10 min on 2 cores -> bench/results/local/
    python bench/bench_rl_guard.py --write-results  # -> bench/results/ (tracked)
    python bench/bench_rl_guard.py --quick   # smoke run
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import add_output_args, output_path, report_header, write_json  # noqa: E402

from rlkit.bc import BCConfig, train_bc  # noqa: E402
from rlkit.collect import CollectConfig, collect  # noqa: E402
from rlkit.rl import RLConfig, train_rl  # noqa: E402

#: (name, critic warm-up env steps, BC loss weight) compared with the BC-loss settings
BASELINES: list[tuple[str, int, float]] = [("none", 0, 0.0), ("critic warm-up 3000", 3000, 0.0)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--algo", default="sac", choices=["sac", "td3"], help="off-policy algorithm")
    p.add_argument("--episodes", type=int, default=None, help="demonstration episodes (100)")
    p.add_argument("--steps", type=int, default=None, help="env steps per setting (6000)")
    p.add_argument("--eval-every", type=int, default=None, help="env steps (1500)")
    p.add_argument("--eval-episodes", type=int, default=None, help="held-out tracks (10)")
    p.add_argument(
        "--bc-weights", type=float, nargs="+", default=[1.0, 10.0, 100.0], help="BC loss weights"
    )
    add_output_args(p, "bench_rl_guard")
    args = p.parse_args()
    guards = BASELINES + [(f"BC loss {w:g}", 0, w) for w in args.bc_weights]
    episodes = args.episodes or (10 if args.quick else 100)
    steps = args.steps or (256 if args.quick else 6000)
    eval_every = args.eval_every or (128 if args.quick else 1500)
    eval_episodes = args.eval_episodes or (2 if args.quick else 10)
    t_start = time.perf_counter()

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rlkit-bench-guard-") as td:
        tmp = Path(td)
        demos, bc = tmp / "demos", tmp / "bc"
        collect(CollectConfig(episodes=episodes, output=str(demos)), progress=False)
        bc_cfg = BCConfig(data=str(demos), output=str(bc), eval_episodes=0)
        if args.quick:
            bc_cfg.epochs = 3
        train_bc(bc_cfg, progress=False)
        for name, warmup, weight in guards:
            print(f"{args.algo} from BC, guard: {name} ...", file=sys.stderr)
            out = tmp / f"rl-{len(rows)}"
            t0 = time.perf_counter()
            train_rl(
                RLConfig(
                    algo=args.algo,
                    timesteps=steps,
                    init_from=str(bc),
                    demos=str(demos),
                    critic_warmup=warmup,
                    bc_weight=weight,
                    eval_every=eval_every,
                    eval_episodes=eval_episodes,
                    checkpoint_every=0,
                    output=str(out),
                ),
                progress=False,
            )
            curve = [
                {k: float(v) if v else None for k, v in r.items()}
                for r in csv.DictReader((out / "learning_curve.csv").open())
            ]
            returns = [r["mean_return"] for r in curve]
            rows.append(
                {
                    "guard": name,
                    "critic_warmup": warmup,
                    "bc_weight": weight,
                    "wall_s": time.perf_counter() - t0,
                    "start_return": returns[0],
                    "min_return": min(returns),
                    "last_return": returns[-1],
                    "last_lap_rate": curve[-1]["lap_rate"],
                    "curve": curve,
                }
            )

    print(f"\n{args.algo.upper()} from BC with demonstrations: collapse guards")
    print(f"{steps} env steps each, {eval_episodes} held-out tracks every {eval_every} steps\n")
    print(f"{'guard':<28} {'start':>7} {'lowest':>7} {'last':>7} {'last laps':>9}")
    print("-" * 28 + " " + " ".join("-" * w for w in (7, 7, 7, 9)))
    for r in rows:
        print(
            f"{r['guard']:<28} {r['start_return']:>7.1f} {r['min_return']:>7.1f} "
            f"{r['last_return']:>7.1f} {100 * r['last_lap_rate']:>8.0f}%"
        )
    record = report_header("bench_rl_guard", t_start)
    record["settings"] = {
        "quick": args.quick,
        "algo": args.algo,
        "episodes": episodes,
        "steps": steps,
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
    }
    record["guards"] = rows
    out = output_path(args, "bench_rl_guard")
    write_json(out, record)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
