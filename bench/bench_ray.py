"""Benchmark: demonstration collection on Ray against the local process pool.

Measures, in one run on this machine (Ray bound to the loopback address only):

1. Wall time of ``collect()`` for ``--episodes`` episodes with ``--executor local --workers 2``
   and with ``--executor ray`` on a local Ray instance of 2 CPUs started once beforehand (as a
   cluster is: running before the job), interleaved, best of ``--repeats``; the Ray instance's
   start time and the first (cold: worker processes start) Ray run are reported apart.
   Goal: Ray within 15 % of the local pool. The datasets are checked to be identical.
2. Overhead per Ray task: round trips of an empty task (one at a time, and 2 at once), and the
   driving time of one chunk of 1, 2, 4 … 256 episodes in this process; the smallest chunk
   whose task overhead is under 5 % of its driving time.
3. The driver's write rate: chunks driven beforehand, then streamed into a ``DatasetWriter``
   alone (episodes/s and MB/s): the ceiling of any cluster, since one process writes the
   dataset. From it and the per-episode cost, the predicted wall time of 100k episodes on 1, 8
   and 64 nodes of 16 cores, and what limits each.

Usage::

    PYTHONPATH=. python bench/bench_ray.py                   # ~2 min -> bench/results/local/
    PYTHONPATH=. python bench/bench_ray.py --write-results   # -> bench/results/ (tracked)
    PYTHONPATH=. python bench/bench_ray.py --quick           # smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Every Ray node this bench starts uses 127.0.0.1 (read when ray is imported).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

try:  # `python bench/bench_ray.py` puts bench/ on sys.path
    from bench_env import (
        add_output_args,
        print_table,
        report_header,
        save_record,
    )
except ImportError:  # `python -m bench.bench_ray`
    from bench.bench_env import (
        add_output_args,
        print_table,
        report_header,
        save_record,
    )

from rlkit.collect import CollectConfig, _chunks, _run_chunk, collect
from rlkit.envs.expert import Expert

NAME = "bench_ray"
TARGET_RATIO = 1.15  # Ray wall / local pool wall, 1000 episodes, 2 CPUs
TARGET_OVERHEAD = 0.05  # task overhead / chunk driving time
NODE_CORES = 16
PREDICT_EPISODES = 100_000
PREDICT_NODES = (1, 8, 64)


def _dataset_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.parts[len(root.parts)] in ("data", "meta")
    }


def _collect(tmp: Path, name: str, episodes: int, max_steps: int, **kw: Any) -> float:
    out = tmp / name
    shutil.rmtree(out, ignore_errors=True)
    cfg = CollectConfig(episodes=episodes, max_steps=max_steps, output=str(out), **kw)
    t = time.perf_counter()
    collect(cfg, progress=False)
    return time.perf_counter() - t


def bench_collection(tmp: Path, episodes: int, max_steps: int, repeats: int) -> dict[str, Any]:
    import ray

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray_start = time.perf_counter() - t
    try:
        cold = _collect(tmp, "ray", episodes, max_steps, executor="ray")
        local, remote = [], []
        for _ in range(repeats):  # interleaved: the machine's noise hits both alike
            local.append(_collect(tmp, "local", episodes, max_steps, workers=2))
            remote.append(_collect(tmp, "ray", episodes, max_steps, executor="ray"))
        same = _dataset_bytes(tmp / "local") == _dataset_bytes(tmp / "ray")
    finally:
        ray.shutdown()
    return {
        "episodes": episodes,
        "max_steps": max_steps,
        "ray_init_s": ray_start,
        "ray_cold_s": cold,
        "local_s": local,
        "ray_s": remote,
        "local_best_s": min(local),
        "ray_best_s": min(remote),
        "ratio_best": min(remote) / min(local),
        "ratio_median": statistics.median(remote) / statistics.median(local),
        "identical": same,
    }


def bench_overhead(max_steps: int, sizes: list[int], rounds: int) -> dict[str, Any]:
    import ray

    @ray.remote(num_cpus=1)
    def empty(x: int) -> int:
        return x

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        ray.get([empty.remote(i) for i in range(20)])  # workers started
        t = time.perf_counter()
        for i in range(rounds):
            ray.get(empty.remote(i))
        serial = (time.perf_counter() - t) / rounds
        t = time.perf_counter()
        ray.get([empty.remote(i) for i in range(rounds)])
        batch = (time.perf_counter() - t) / rounds * 2  # per task on each of 2 CPUs
    finally:
        ray.shutdown()
    expert = Expert()
    env_config = CollectConfig(max_steps=max_steps).env_config()
    chunks = []
    for n in sizes:
        _run_chunk(list(range(n)), 0, 0.1, env_config, expert)  # warm
        t = time.perf_counter()
        _run_chunk(list(range(1000, 1000 + n)), 0, 0.1, env_config, expert)
        drive = time.perf_counter() - t
        row = {"episodes": n, "drive_s": drive, "per_episode_s": drive / n}
        chunks.append({**row, "overhead": serial / drive})
    ok = [c["episodes"] for c in chunks if c["overhead"] < TARGET_OVERHEAD]
    return {
        "task_round_trip_s": serial,
        "task_s_per_cpu_when_many": batch,
        "chunks": chunks,
        "smallest_chunk_under_5pct": min(ok) if ok else None,
    }


def bench_writer(tmp: Path, episodes: int, max_steps: int) -> dict[str, Any]:
    """Episodes/s a DatasetWriter takes from driven chunks (the driver's only work)."""
    from rlkit.collect import _dataset_writer

    cfg = CollectConfig(episodes=episodes, max_steps=max_steps, output=str(tmp / "writer"))
    env_config, expert = cfg.env_config(), Expert()
    chunks = [_run_chunk(c, 0, cfg.noise, env_config, expert) for c in _chunks(episodes, 1, 256)]
    import numpy as np

    t = time.perf_counter()
    writer = _dataset_writer(cfg, env_config)
    for chunk in chunks:
        frames = dict(chunk["frames"])
        frames["episode_index"] = np.repeat(np.asarray(chunk["indices"]), chunk["lengths"])
        writer.add(frames, chunk["stats"])
    writer.close({})
    wall = time.perf_counter() - t
    size = sum(p.stat().st_size for p in (tmp / "writer").rglob("*") if p.is_file())
    frames = sum(int(c["lengths"].sum()) for c in chunks)
    return {
        "episodes": episodes,
        "frames": frames,
        "wall_s": wall,
        "episodes_per_s": episodes / wall,
        "mb_per_s": size / wall / 1e6,
        "bytes_per_episode": size / episodes,
    }


def predict(per_episode_s: float, task_s: float, chunk: int, write_eps: float) -> list[dict]:
    """Wall time of PREDICT_EPISODES on N nodes of NODE_CORES: driving (spread over the CPUs,
    plus each task's overhead) overlaps the writing, so the slower of the two sets it."""
    rows = []
    for nodes in PREDICT_NODES:
        cpus = nodes * NODE_CORES
        tasks = math.ceil(PREDICT_EPISODES / chunk)
        drive = (PREDICT_EPISODES * per_episode_s + tasks * task_s) / cpus
        write = PREDICT_EPISODES / write_eps
        rows.append(
            {
                "nodes": nodes,
                "cpus": cpus,
                "drive_s": drive,
                "write_s": write,
                "wall_s": max(drive, write),
                "limit": "driver's write rate" if write > drive else "driving (CPUs)",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=1000, help="episodes per collection run")
    p.add_argument("--max-steps", type=int, default=1000, help="steps per episode")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs of each executor")
    p.add_argument("--quick", action="store_true", help="smoke run: 40 episodes of 200 steps")
    add_output_args(p, NAME)
    args = p.parse_args(argv)
    if args.quick:
        args.episodes, args.max_steps, args.repeats = 40, 200, 1
    t0 = time.perf_counter()
    sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as d:
        tmp = Path(d)
        coll = bench_collection(tmp, args.episodes, args.max_steps, args.repeats)
        over = bench_overhead(args.max_steps, sizes[:4] if args.quick else sizes, 200)
        writer = bench_writer(tmp, min(args.episodes, 512), args.max_steps)
    big = over["chunks"][-1]
    pred = predict(
        big["per_episode_s"], over["task_round_trip_s"], big["episodes"], writer["episodes_per_s"]
    )

    init = coll["ray_init_s"]
    print(
        f"\ncollection, {args.episodes} episodes of {args.max_steps} steps, 2 CPUs "
        f"(best of {args.repeats}; Ray instance started once: {init:.1f} s)"
    )
    print_table(
        ["executor", "wall s (best)", "wall s (median)", "vs local"],
        [
            ["local pool, 2 workers", f"{coll['local_best_s']:.2f}",
             f"{statistics.median(coll['local_s']):.2f}", "1.00"],
            ["ray, 2 CPUs", f"{coll['ray_best_s']:.2f}", f"{statistics.median(coll['ray_s']):.2f}",
             f"{coll['ratio_best']:.2f} (goal <= {TARGET_RATIO})"],
            ["ray, first run (cold)", f"{coll['ray_cold_s']:.2f}", "", ""],
        ],
    )  # fmt: skip
    print(f"datasets identical: {coll['identical']}")
    many = 1e3 * over["task_s_per_cpu_when_many"]
    print(
        f"\nRay task round trip {1e3 * over['task_round_trip_s']:.2f} ms "
        f"({many:.2f} ms per task per CPU when many are queued)"
    )
    print_table(
        ["chunk (episodes)", "driving s", "s per episode", "task overhead"],
        [[str(c["episodes"]), f"{c['drive_s']:.3f}", f"{c['per_episode_s']:.4f}",
          f"{100 * c['overhead']:.2f} %"] for c in over["chunks"]],
    )  # fmt: skip
    print(f"smallest chunk with overhead < 5 %: {over['smallest_chunk_under_5pct']}")
    per_ep = writer["bytes_per_episode"] / 1e3
    print(
        f"\ndriver write rate: {writer['episodes_per_s']:.0f} episodes/s "
        f"({writer['mb_per_s']:.1f} MB/s, {per_ep:.0f} kB/episode)"
    )
    print(f"\npredicted: {PREDICT_EPISODES:,} episodes, nodes of {NODE_CORES} cores, "
          f"chunks of {big['episodes']}")  # fmt: skip
    print_table(
        ["nodes", "CPUs", "driving s", "writing s", "wall s", "limited by"],
        [[str(r["nodes"]), str(r["cpus"]), f"{r['drive_s']:.0f}", f"{r['write_s']:.0f}",
          f"{r['wall_s']:.0f}", r["limit"]] for r in pred],
    )  # fmt: skip
    record = report_header(NAME, t0)
    record.update(
        settings={k: getattr(args, k) for k in ("episodes", "max_steps", "repeats", "quick")},
        collection=coll,
        overhead=over,
        writer=writer,
        prediction=pred,
        targets={"ray_vs_local": TARGET_RATIO, "task_overhead": TARGET_OVERHEAD},
    )
    save_record(args, NAME, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
