"""Benchmark: behaviour cloning speed per data path, and BC quality against the expert.

1. Speed: ``--epochs`` (default 50) epochs on ``--episodes`` (default 100) demonstration
   episodes for each data path: the in-memory path (torch threads 1 and all cores) and the
   DataLoader with ``num_workers`` 0, 2, 4 (pin_memory on and off where CUDA exists; pinning
   does nothing without it). Early stopping is disabled so every setting runs every epoch.
2. Quality: ``train_bc.py`` defaults (early stopping on) and evaluation on ``--eval-episodes``
   held-out tracks; BC return as a fraction of the expert's on the same tracks, lap
   completion rates. If BC is below 90 %, the run is repeated with DAgger rounds.

Usage::

    python bench/bench_bc.py            # ~6 min on 2 cores -> bench/results/local/
    python bench/bench_bc.py --write-results    # -> bench/results/ (tracked)
    python bench/bench_bc.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import add_output_args, output_path, report_header, write_json  # noqa: E402

from rlkit.bc import BCConfig, train_bc  # noqa: E402
from rlkit.collect import CollectConfig, collect  # noqa: E402
from rlkit.utils import available_cores  # noqa: E402


def speed_settings() -> list[dict[str, Any]]:
    cores = available_cores()
    out: list[dict[str, Any]] = [
        {"loader": "memory", "threads": 1},
        {"loader": "memory", "threads": cores},
    ]
    pins = ["off", "on"] if torch.cuda.is_available() else ["off"]
    for workers in (0, 2, 4):
        for pin in pins:
            out.append(
                {"loader": "dataloader", "workers": workers, "pin_memory": pin, "threads": 1}
            )
    return out


def run_speed(data: Path, tmp: Path, epochs: int, setting: dict[str, Any]) -> dict[str, Any]:
    cfg = BCConfig(
        data=str(data),
        output=str(tmp / "speed"),
        epochs=epochs,
        patience=10**6,
        eval_episodes=0,
        overwrite=True,
        **setting,
    )
    t0 = time.perf_counter()
    res = train_bc(cfg, progress=False)
    wall = time.perf_counter() - t0
    return {
        **setting,
        "epochs": res.epochs_run,
        "wall_s": wall,
        "train_s": res.train_seconds,
        "samples_per_s": res.samples_per_s,
        "device": res.device,
    }


def run_quality(data: Path, tmp: Path, eval_episodes: int, dagger: int) -> dict[str, Any]:
    cfg = BCConfig(
        data=str(data),
        output=str(tmp / f"quality{dagger}"),
        eval_episodes=eval_episodes,
        dagger_rounds=dagger,
        overwrite=True,
    )
    t0 = time.perf_counter()
    res = train_bc(cfg, progress=False)
    bc, expert = res.eval["bc"], res.eval["expert"]
    return {
        "dagger_rounds": dagger,
        "epochs_run": res.epochs_run,
        "wall_s": time.perf_counter() - t0,
        "bc": bc.to_dict(),
        "expert": expert.to_dict(),
        "return_fraction_of_expert": bc.mean_return / expert.mean_return,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--episodes", type=int, default=None, help="demo episodes (default 100)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per speed setting (default 50)")
    p.add_argument("--eval-episodes", type=int, default=None, help="held-out tracks (default 50)")
    p.add_argument("--data", default=None, help="use this dataset instead of collecting one")
    add_output_args(p, "bench_bc")
    args = p.parse_args()
    episodes = args.episodes or (6 if args.quick else 100)
    epochs = args.epochs or (2 if args.quick else 50)
    eval_episodes = args.eval_episodes or (4 if args.quick else 50)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlkit-bench-bc-") as td:
        tmp = Path(td)
        data = Path(args.data) if args.data else tmp / "demos"
        if not args.data:
            max_steps = 150 if args.quick else 1000
            cfg = CollectConfig(episodes=episodes, output=str(data), max_steps=max_steps)
            collect(cfg, progress=False)
        speed = []
        for setting in speed_settings():
            print(f"speed {setting} ...", file=sys.stderr)
            speed.append(run_speed(data, tmp, epochs, setting))
        print("quality ...", file=sys.stderr)
        quality = [run_quality(data, tmp, eval_episodes, 0)]
        if quality[0]["return_fraction_of_expert"] < 0.9:
            quality.append(run_quality(data, tmp, eval_episodes, 2))

    print(f"\nBC speed: {epochs} epochs, {episodes} demo episodes, batch 256, MLP 256x256")
    print(
        f"{'loader':<11} {'workers':>7} {'pin':>4} {'threads':>7} {'wall s':>8} {'train s':>8} "
        f"{'samples/s':>10}"
    )
    for r in speed:
        print(
            f"{r['loader']:<11} {r.get('workers', '-'):>7} {r.get('pin_memory', '-'):>4} "
            f"{r['threads']:>7} {r['wall_s']:>8.1f} {r['train_s']:>8.1f} "
            f"{r['samples_per_s']:>10,.0f}"
        )
    best = min(speed, key=lambda r: r["wall_s"])
    print(f"best: {best['loader']} threads={best['threads']}, {best['wall_s']:.1f} s (goal < 60 s)")
    print(f"\nBC quality on {eval_episodes} held-out tracks")
    for q in quality:
        print(
            f"dagger={q['dagger_rounds']}: BC return {q['bc']['mean_return']:.1f} = "
            f"{100 * q['return_fraction_of_expert']:.1f} % of the expert's "
            f"{q['expert']['mean_return']:.1f}; laps completed BC "
            f"{100 * q['bc']['lap_rate']:.0f} % vs expert {100 * q['expert']['lap_rate']:.0f} %"
        )

    report = {
        **report_header("bench_bc", t_start),
        "settings": {
            "quick": args.quick,
            "episodes": episodes,
            "epochs": epochs,
            "eval_episodes": eval_episodes,
            "batch_size": 256,
            "hidden": [256, 256],
        },
        "speed": speed,
        "best_speed_setting": best,
        "quality": quality,
    }
    out = output_path(args, "bench_bc")
    write_json(out, report)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
