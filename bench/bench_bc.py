"""Benchmark: behaviour cloning speed per data path, and BC quality against the expert.

1. Speed: ``--epochs`` (default 50) epochs on ``--episodes`` (default 100) demonstration
   episodes for each data path: the in-memory path (torch threads 1 and all cores) and the
   DataLoader with ``num_workers`` 0, 2, 4 (pin_memory on and off where CUDA exists; pinning
   does nothing without it). Early stopping is disabled so every setting runs every epoch.
2. Quality: ``train_bc.py`` defaults (early stopping on) and evaluation on ``--eval-episodes``
   held-out tracks; BC return as a fraction of the expert's on the same tracks, lap
   completion rates. If BC is below 90 %, the run is repeated with DAgger rounds.

``--pixels``: instead, BC from camera frames: collect ``--episodes`` episodes with
``--camera 96``, train ``train_bc.py --obs-key observation.images.top`` for
``--pixel-epochs`` epochs and evaluate it on ``--eval-episodes`` held-out tracks against the
expert (-> ``bench_bc_pixels.json``): collection, decoding and training wall time, return as
a fraction of the expert's, laps.

Usage::

    python bench/bench_bc.py            # ~6 min on 2 cores -> bench/results/local/
    python bench/bench_bc.py --write-results    # -> bench/results/ (tracked)
    python bench/bench_bc.py --quick    # smoke run
    python bench/bench_bc.py --pixels   # BC from camera frames
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


def pixels_main(args: argparse.Namespace) -> int:
    """``--pixels``: BC from the camera frames of a ``--camera`` collection (module doc)."""
    from rlkit.rollout import CAMERA_KEYS

    episodes = args.episodes or (6 if args.quick else 100)
    epochs = args.pixel_epochs or (1 if args.quick else 5)
    eval_episodes = args.eval_episodes or (4 if args.quick else 50)
    size = 48 if args.quick else 96
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlkit-bench-bc-pixels-") as td:
        tmp = Path(td)
        data = Path(args.data) if args.data else tmp / "demos"
        t0 = time.perf_counter()
        if not args.data:
            max_steps = 150 if args.quick else 1000
            cfg = CollectConfig(episodes=episodes, output=str(data), max_steps=max_steps,
                                camera=size, camera_view=args.view)  # fmt: skip
            collect(cfg, progress=False)
        collect_s = time.perf_counter() - t0
        cfg = BCConfig(data=str(data), output=str(tmp / "bc"), obs_key=CAMERA_KEYS[args.view],
                       epochs=epochs, eval_episodes=eval_episodes)  # fmt: skip
        t0 = time.perf_counter()
        res = train_bc(cfg, progress=True)
        wall = time.perf_counter() - t0
    bc, expert = res.eval["bc"], res.eval["expert"]
    quality = {
        "bc": bc.to_dict(),
        "expert": expert.to_dict(),
        "return_fraction_of_expert": bc.mean_return / expert.mean_return,
    }
    print(f"\nBC from pixels: {episodes} camera episodes ({args.view} view, {size} x {size}), "
          f"{epochs} epochs, "
          f"frame gap {cfg.frame_gap}, batch {cfg.batch_size}")  # fmt: skip
    print(f"collect {collect_s:.1f} s; train_bc.py {wall:.1f} s in all, of which training "
          f"{res.train_seconds:.1f} s ({res.samples_per_s:,.0f} samples/s, "
          f"{res.loader} loader)")  # fmt: skip
    print(f"on {eval_episodes} held-out tracks: BC return {bc.mean_return:.1f} = "
          f"{100 * quality['return_fraction_of_expert']:.1f} % of the expert's "
          f"{expert.mean_return:.1f} (goal >= 90 %); laps BC {100 * bc.lap_rate:.0f} % vs "
          f"expert {100 * expert.lap_rate:.0f} %, off track BC "
          f"{100 * bc.crash_rate:.0f} %")  # fmt: skip
    report = {
        **report_header("bench_bc_pixels", t_start),
        "settings": {
            "quick": args.quick,
            "episodes": episodes,
            "camera": size,
            "epochs": epochs,
            "eval_episodes": eval_episodes,
            "frame_gap": cfg.frame_gap,
            "batch_size": cfg.batch_size,
            "hidden": cfg.hidden,
        },  # fmt: skip
        "collect_s": collect_s,
        "train_bc_wall_s": wall,
        "train_s": res.train_seconds,
        "epochs_run": res.epochs_run,
        "samples_per_s": res.samples_per_s,
        "loader": res.loader,
        "quality": quality,
    }
    out = output_path(args, "bench_bc_pixels")
    write_json(out, report)
    print(f"\nwrote {out}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--pixels", action="store_true", help="instead: BC from camera frames")
    p.add_argument("--pixel-epochs", type=int, default=None, help="--pixels: epochs (default 5)")
    p.add_argument("--view", choices=["ego", "top"], default="ego", help="--pixels: camera view")
    p.add_argument("--episodes", type=int, default=None, help="demo episodes (default 100)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per speed setting (default 50)")
    p.add_argument("--eval-episodes", type=int, default=None, help="held-out tracks (default 50)")
    p.add_argument("--data", default=None, help="use this dataset instead of collecting one")
    add_output_args(p, "bench_bc")
    args = p.parse_args()
    if args.pixels:
        return pixels_main(args)
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
