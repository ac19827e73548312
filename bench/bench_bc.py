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

``--compare-with CHECKOUT``: instead, BC training speed and memory of this checkout against
another one (e.g. ``git worktree add /tmp/before ae3fb8e``), side by side. Each checkout
collects the same episodes with its own ``collect_demonstrations.py`` (so each reads its own
dataset format); for each data path below, ``train_bc.py`` of each checkout runs as a child
process (its ``rlkit`` checked) with that data, the same epochs and seed, early stopping off,
no evaluation, ``--repeats`` times, the checkouts interleaved (now, before, now, ...). Per run:
the training seconds and samples/s that ``train_bc.py`` itself records (``result.json``), the
child's wall time, its peak RSS (``os.wait4``: the larger of the process and its DataLoader
workers, not their sum) and the last epoch's validation loss (``train_log.csv``), so a reader
sees both trained the same thing (-> ``bench_bc_vs_<commit>.json``). The data paths, as the
same flags for both checkouts: ``--workers`` has meant DataLoader ``num_workers`` (used only
with ``--loader dataloader``; the in-memory path has none) both at ae3fb8e (``rlkit/bc.py``)
and now (``rlkit/bc/config.py``), so no translation is needed; a flag the other checkout's
``train_bc.py --help`` lacks skips that setting with the reason printed:

- memory, 1 thread:        ``--loader memory --threads 1``
- DataLoader, 0 workers:   ``--loader dataloader --workers 0 --pin-memory off --threads 1``
- DataLoader, 2 workers:   ``--loader dataloader --workers 2 --pin-memory off --threads 1``

Usage::

    python bench/bench_bc.py            # ~6 min on 2 cores -> bench/results/local/
    python bench/bench_bc.py --write-results    # -> bench/results/ (tracked)
    python bench/bench_bc.py --quick    # smoke run
    python bench/bench_bc.py --pixels   # BC from camera frames
    python bench/bench_bc.py --compare-with /tmp/before   # ~25 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import (  # noqa: E402
    REPO,
    add_compare_arg,
    add_output_args,
    check_compare_arg,
    check_imported,
    checkout_env,
    output_path,
    print_table,
    report_header,
    save_record,
    write_json,
)

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


# ---------------------------------------------------------------------- --compare-with
SCRIPT_NAME = "train_bc.py"
#: The data paths --compare-with measures, as train_bc.py flags (the same at ae3fb8e and now).
COMPARE_SETTINGS = {
    "memory, 1 thread": ["--loader", "memory", "--threads", "1"],
    "DataLoader, 0 workers": ["--loader", "dataloader", "--workers", "0", "--pin-memory", "off",
                              "--threads", "1"],
    "DataLoader, 2 workers": ["--loader", "dataloader", "--workers", "2", "--pin-memory", "off",
                              "--threads", "1"],
}  # fmt: skip
#: The child runs a checkout's train_bc.py, then names the rlkit it imported (on stderr).
CHILD = (
    "import runpy, sys\nbench, sys.argv = sys.argv[1], sys.argv[2:]\ntry:\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\nfinally:\n"
    "    sys.path.insert(0, bench)\n"
    "    from bench_env import imported_rlkit\n"
    "    print('\\nimported rlkit:', imported_rlkit(), file=sys.stderr)\n"
)


def checkout_label(repo: Path) -> str:
    """The short commit of a git checkout (``+dirty`` with uncommitted changes), else its name."""
    git = ["git", "-C", str(repo)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0 or not (repo / ".git").exists():
        return repo.name
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return head.stdout.strip() + ("+dirty" if dirty else "")


def script_help(repo: Path, cwd: Path) -> str:
    """``train_bc.py --help`` of checkout ``repo``: which flags it takes."""
    cmd = [sys.executable, str(repo / SCRIPT_NAME), "--help"]
    proc = subprocess.run(cmd, cwd=cwd, env=checkout_env(repo), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def run_collect(repo: Path, flags: list[str], tmp: Path) -> None:
    """``collect_demonstrations.py`` of checkout ``repo`` as a child process (cwd ``tmp``)."""
    cmd = [sys.executable, str(repo / "collect_demonstrations.py"), *flags]
    proc = subprocess.run(cmd, cwd=tmp, env=checkout_env(repo), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr}")


def run_train(repo: Path, flags: list[str], tmp: Path) -> dict[str, Any]:
    """One ``train_bc.py`` of checkout ``repo`` as a child process (cwd ``tmp``: no config.yml
    is read); its own timing and losses, its wall time and peak RSS (``os.wait4``)."""
    out, log = tmp / "run", tmp / "run.log"
    bench_dir = str(Path(__file__).resolve().parent)
    cmd = [sys.executable, "-c", CHILD, bench_dir, str(repo / SCRIPT_NAME), "--output", str(out),
           *flags]  # fmt: skip
    with log.open("w") as f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tmp, env=checkout_env(repo), stdout=f, stderr=f)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{repo / SCRIPT_NAME} failed (exit {proc.returncode}):\n{text[-4000:]}")
    check_imported(text.rsplit("imported rlkit: ", 1)[1].strip(), repo, SCRIPT_NAME)
    res = json.loads((out / "result.json").read_text())
    with (out / "train_log.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    return {
        "train_s": res["train_seconds"],
        "wall_s": wall,
        "samples_per_s": res["samples_per_s"],
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "final_val_loss": float(last["val_loss"]),
        "best_val_loss": res["best_val_loss"],
        "epochs_run": res["epochs_run"],
        "loader": res["loader"],
        "device": res["device"],
    }


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best and median training seconds (the best run's other figures), the largest RSS."""
    train = [r["train_s"] for r in runs]
    best = runs[train.index(min(train))]
    return {
        **best,
        "train_s_best": best["train_s"],
        "train_s_median": statistics.median(train),
        "train_s": train,
        "wall_s_best": min(r["wall_s"] for r in runs),
        "wall_s_median": statistics.median(r["wall_s"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def compare_main(args: argparse.Namespace) -> int:
    """``--compare-with``: this checkout's train_bc.py against another's (module doc)."""
    other, t_start = args.compare_with, time.perf_counter()
    labels = {"now": checkout_label(REPO), "before": checkout_label(other)}
    repos = {"now": REPO, "before": other}
    episodes = args.episodes or (6 if args.quick else 100)
    epochs = args.epochs or (2 if args.quick else 50)
    repeats = args.repeats or (1 if args.quick else 3)
    common = ["--epochs", str(epochs), "--patience", str(10**6), "--eval-episodes", "0",
              "--dagger-rounds", "0", "--seed", "0", "--overwrite"]  # fmt: skip
    results, skipped = [], {}
    with tempfile.TemporaryDirectory(prefix="rlkit-bench-bc-vs-") as td:
        tmp = Path(td)
        helps = {side: script_help(repo, tmp) for side, repo in repos.items()}
        # Each checkout trains on demonstrations it collected itself (the same episodes: the
        # collector is deterministic), so each reads its own dataset format: a newer rlkit
        # records env keys (e.g. edge) that an older one refuses.
        data = {side: Path(args.data).resolve() if args.data else tmp / f"demos_{side}"
                for side in repos}  # fmt: skip
        if not args.data:
            max_steps = 150 if args.quick else 1000
            for side, repo in repos.items():
                print(f"collecting {episodes} episodes with {repo} ...", file=sys.stderr)
                run_collect(repo, ["--episodes", str(episodes), "--max-steps", str(max_steps),
                                   "--output", str(data[side])], tmp)  # fmt: skip
        for name, flags in COMPARE_SETTINGS.items():
            missing = {s: [f for f in [*flags, *common] if f.startswith("--") and f not in h]
                       for s, h in helps.items()}  # fmt: skip
            if any(missing.values()):
                skipped[name] = f"train_bc.py --help lacks {missing}"
                print(f"skipping {name}: {skipped[name]}")
                continue
            runs: dict[str, list[dict[str, Any]]] = {"now": [], "before": []}
            for r in range(repeats):
                for side, repo in repos.items():
                    print(f"{name}: {side} ({repo}), repeat {r + 1}/{repeats} ...", file=sys.stderr)
                    flags_side = [*common, "--data", str(data[side]), *flags]
                    runs[side].append(run_train(repo, flags_side, tmp))
                    if runs[side][-1]["loader"] != flags[1]:  # the flags did what they say
                        raise RuntimeError(f"{side} trained on {runs[side][-1]['loader']}")
            now, before = summarise_runs(runs["now"]), summarise_runs(runs["before"])
            results.append({
                "setting": name, "flags": flags, "now": now, "before": before,
                "now_over_before_best": now["train_s_best"] / before["train_s_best"],
                "now_over_before_median": now["train_s_median"] / before["train_s_median"],
                "runs": runs,
            })  # fmt: skip

    print(f"\nBC training, this checkout ({labels['now']}) against {other} "
          f"({labels['before']}): {epochs} epochs on {episodes} episodes, best of {repeats} "
          "interleaved runs")  # fmt: skip
    print_table(
        ["setting", "train s now", "train s before", "now/before", "median now/before",
         "peak RSS MB now", "peak RSS MB before", "val loss now", "val loss before"],
        [[r["setting"], f"{r['now']['train_s_best']:.2f}", f"{r['before']['train_s_best']:.2f}",
          f"{r['now_over_before_best']:.2f}", f"{r['now_over_before_median']:.2f}",
          f"{r['now']['peak_rss_mb']:,.0f}", f"{r['before']['peak_rss_mb']:,.0f}",
          f"{r['now']['final_val_loss']:.5g}", f"{r['before']['final_val_loss']:.5g}"]
         for r in results],
    )  # fmt: skip
    print("train s: the training time train_bc.py records (result.json); the child's wall time "
          "(start, data loading, export) is in the JSON; val loss: the last epoch's")  # fmt: skip
    if args.quick:
        print("  (--quick sizes: the figures mean nothing)")
    record = report_header(f"bench_bc_vs_{labels['before']}", t_start)
    record["settings"] = {
        "quick": args.quick, "episodes": episodes, "epochs": epochs, "repeats": repeats,
        "data": str(args.data) if args.data else "collected by each checkout, the same episodes",
        "compare_with": str(other), "checkouts": labels,
        "common_flags": common,
        "worker_mapping": {
            "flags": COMPARE_SETTINGS,
            "same_flags_for_both": "--workers is DataLoader num_workers in both versions, used "
            "only with --loader dataloader (ae3fb8e rlkit/bc.py BCConfig.workers, help 'DataLoader "
            "num_workers (default: cores / 2, min 1, cap 8)'; now rlkit/bc/config.py, the same "
            "help from utils.WORKER_RULES['bc']); --loader, --threads, --pin-memory alike",
            "skipped": skipped,
        },
        "train_s": "train_bc.py's own training seconds (result.json train_seconds)",
        "wall_s": "the child's wall time: interpreter start, data loading, training, export",
        "peak_rss_mb": "os.wait4 ru_maxrss of the child: max of it and its DataLoader workers",
        "final_val_loss": "train_log.csv val_loss of the last epoch",
    }  # fmt: skip
    record["results"] = results
    save_record(args, record["benchmark"], record)
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
    p.add_argument("--repeats", type=int, default=None, help="--compare-with: runs per setting "
                   "and checkout (default 3)")  # fmt: skip
    add_output_args(p, "bench_bc")
    add_compare_arg(p)
    args = p.parse_args()
    check_compare_arg(p, args)
    if args.compare_with is not None:
        if args.pixels:
            p.error("--compare-with compares state BC training, not --pixels: pass one of them")
        if not (args.compare_with / SCRIPT_NAME).is_file():
            p.error(f"--compare-with {args.compare_with}: no {SCRIPT_NAME} there")
        if any(x is not None and x < 1 for x in (args.episodes, args.epochs, args.repeats)):
            p.error("--episodes, --epochs and --repeats must be >= 1")
        return compare_main(args)
    if args.repeats is not None:
        p.error("--repeats is for --compare-with")
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
