"""Benchmark: the seed's per-item world-model batch path, with and without page faults.

The seed's ``__getitem__`` converts each slice to a new float32 array and ``torch.stack``
copies them into another: ~240 MB of new memory per B=50 x T=50 batch. Whether that memory
is fresh (every page faults in) or reused from the heap depends on glibc's malloc state, so
``bench_world_model.py`` measured the seed at 113-137 ms per batch in some runs and 24 ms in
another. This script times the same path in a child process per malloc setting:

* ``default``: glibc's defaults (large arrays are mmapped, freed, mmapped again);
* ``reuse``: ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` raised, so freed memory
  is kept and reused (what a warmed-up process may do by itself).

It reports ms per batch and minor page faults per batch (best of ``--repeats`` rounds of 10
batches, on random uint8 episodes of 101 frames of 64x64x3).

Usage::

    python bench/bench_seed_collate.py [--write-results]     # ~30 s
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

try:  # `python bench/bench_seed_collate.py` puts bench/ on sys.path
    from bench_env import add_output_args, print_table, report_header, save_record
except ImportError:  # imported as bench.bench_seed_collate
    from bench.bench_env import add_output_args, print_table, report_header, save_record

NAME = "bench_seed_collate"
SETTINGS = {
    "default": {},
    "reuse": {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824"},
}


def child(repeats: int) -> None:
    """Time the seed's path (``bench_world_model``'s copy of it) in this process; print one
    JSON line."""
    import resource

    import numpy as np

    try:
        from bench_world_model import SeedStyleDataset, collate_episode_batch
    except ImportError:
        from bench.bench_world_model import SeedStyleDataset, collate_episode_batch

    rng = np.random.default_rng(0)
    np.random.seed(0)  # SeedStyleDataset draws with numpy's global generator, as the seed did
    episodes = [
        {
            "obs": rng.integers(0, 256, (101, 64, 64, 3), dtype=np.uint8),
            "action": np.zeros((100, 1), np.float32),
            "reward": np.zeros(100, np.float32),
            "terminal": np.zeros(100, bool),
        }
        for _ in range(100)
    ]
    ds = SeedStyleDataset(episodes, 50)

    def batch() -> None:
        collate_episode_batch([ds[0] for _ in range(50)])

    rounds = []
    for _ in range(repeats):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        for _ in range(10):
            batch()
        ms = (time.perf_counter() - t0) / 10 * 1e3
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 10
        rounds.append({"ms_per_batch": ms, "minor_faults_per_batch": faults})
    print(json.dumps(min(rounds, key=lambda r: r["ms_per_batch"])))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="rounds of 10 batches (best kept)")
    p.add_argument("--quick", action="store_true", help="one round (smoke run)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_output_args(p, NAME)
    args = p.parse_args()
    if args.quick:
        args.repeats = 1
    if args.child:
        child(args.repeats)
        return 0
    t0 = time.perf_counter()
    results = {}
    for name, env in SETTINGS.items():
        cmd = [sys.executable, __file__, "--child", "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"the {name} child failed:\n{out.stderr}")
        results[name] = {"env": env, **json.loads(out.stdout.strip().splitlines()[-1])}
    print("\nThe seed's per-item batch path (B=50 x T=50), one child process per malloc setting")
    print_table(
        ["malloc", "ms/batch", "minor faults/batch"],
        [
            [k, f"{r['ms_per_batch']:.1f}", f"{r['minor_faults_per_batch']:.0f}"]
            for k, r in results.items()
        ],
    )
    save_record(args, NAME, {**report_header(NAME, t0), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
