"""Benchmark: ``merge_lerobot_dataset.py``'s merger against a per-row padding baseline.

Measures, in one run on this machine:

1. **v2.1 sources, 1M frames**: 2 synthetic v2.1 datasets of ``--episodes`` (1000) episodes x
   ``--frames`` (500) frames; the first has ``observation.state``/``action`` of dim 14, the
   second of dim 7, so both are padded to 14 (and, in a second case, ``--pad-to 32``). No
   video. rlkit's :func:`rlkit.lerobot.merge.merge` to v3.0 and to v2.1 output (validation of
   the output included), wall time, frames/s, peak RSS of the process that ran it.
2. **The baseline** on the same sources: a faithful re-implementation of the per-row merge
   loop users run today (any4lerobot's ``merge_lerobot_dataset.py``): per episode file
   ``pandas.read_parquet``, ``series.apply(np.pad)`` per padded column (one Python call per
   row), index columns rewritten, ``DataFrame.to_parquet``; per-episode stats are summarised
   as that tool does. Same machine, same run; the ratio is rlkit / baseline.
3. **v3.0 sources**: 2 x ``--v3-episodes`` (100) x ``--v3-frames`` (400), written with
   rlkit's writer, merged to v3.0 (goal <= 1 s).

Every case runs in a fresh subprocess (so peak RSS is its own) ``--repeats`` times; the best
wall time is reported (neighbours on a shared machine only ever add time), the median is kept.

``--compare-with CHECKOUT`` runs every rlkit case also with the ``rlkit`` package of another
checkout (e.g. ``git worktree add /tmp/before COMMIT``), its runs interleaved with this one's,
and prints both side by side: a regression check of a change against the code before it.

Usage::

    PYTHONPATH=. python bench/bench_merge.py          # minutes -> bench/results/local/
    PYTHONPATH=. python bench/bench_merge.py --write-results  # -> bench/results/ (tracked)
    PYTHONPATH=. python bench/bench_merge.py --quick  # smoke run, seconds; figures mean nothing
    python bench/bench_merge.py --compare-with /tmp/before   # this checkout vs another
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

try:  # `python bench/bench_merge.py` puts bench/ on sys.path
    from bench_env import (
        add_compare_arg,
        add_output_args,
        check_compare_arg,
        check_imported,
        checkout_env,
        imported_rlkit,
        print_table,
        report_header,
        save_record,
    )
except ImportError:  # `python -m bench.bench_merge`
    from bench.bench_env import (
        add_compare_arg,
        add_output_args,
        check_compare_arg,
        check_imported,
        checkout_env,
        imported_rlkit,
        print_table,
        report_header,
        save_record,
    )

NAME = "bench_merge"
REPO = Path(__file__).resolve().parent.parent
GOAL_V21_S = 10.0  # 2 x 1000 x 500 v2.1 frames on 2 cores
GOAL_V3_S = 1.0  # 2 x 100 x 400 v3.0 frames
FPS = 30
INDEX_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


# ---------------------------------------------------------------------- synthetic sources
def write_v21_source(root: Path, episodes: int, frames: int, dim: int, seed: int) -> None:
    """A v2.1 dataset laid out as lerobot 0.3 writes it: one parquet per episode with
    ``fixed_size_list<float>`` vectors and the ``huggingface`` schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    meta = root / "meta"
    meta.mkdir(parents=True)
    vec = {"dtype": "float32", "_type": "Value"}
    hf = {
        "observation.state": {"feature": vec, "length": dim, "_type": "Sequence"},
        "action": {"feature": vec, "length": dim, "_type": "Sequence"},
        "timestamp": {"dtype": "float32", "_type": "Value"},
        **{k: {"dtype": "int64", "_type": "Value"} for k in INDEX_KEYS[1:]},
    }
    schema_meta = {"huggingface": json.dumps({"info": {"features": hf}})}
    tasks = [f"task {seed}-{i}" for i in range(3)] + ["shared task"]
    ts = (np.arange(frames, dtype=np.float64) / FPS).astype(np.float32)
    frame_index = np.arange(frames, dtype=np.int64)
    ep_lines, stat_lines = [], []
    for ep in range(episodes):
        state = rng.standard_normal((frames, dim)).astype(np.float32)
        action = rng.uniform(-1, 1, (frames, dim)).astype(np.float32)
        task = ep % len(tasks)
        cols = {
            "observation.state": pa.FixedSizeListArray.from_arrays(state.reshape(-1), dim),
            "action": pa.FixedSizeListArray.from_arrays(action.reshape(-1), dim),
            "timestamp": pa.array(ts),
            "frame_index": pa.array(frame_index),
            "episode_index": pa.array(np.full(frames, ep, dtype=np.int64)),
            "index": pa.array(np.arange(ep * frames, (ep + 1) * frames, dtype=np.int64)),
            "task_index": pa.array(np.full(frames, task, dtype=np.int64)),
        }
        path = root / f"data/chunk-{ep // 1000:03d}/episode_{ep:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols).replace_schema_metadata(schema_meta), path)
        ep_lines.append(json.dumps({"episode_index": ep, "tasks": [tasks[task]], "length": frames}))
        st: dict[str, Any] = {}
        for key, arr in (("observation.state", state), ("action", action)):
            a = arr.astype(np.float64)
            st[key] = {
                "min": a.min(0).tolist(),
                "max": a.max(0).tolist(),
                "mean": a.mean(0).tolist(),
                "std": a.std(0).tolist(),
                "count": [frames],
            }
        stat_lines.append(json.dumps({"episode_index": ep, "stats": st}))
    (meta / "episodes.jsonl").write_text("\n".join(ep_lines) + "\n")
    (meta / "episodes_stats.jsonl").write_text("\n".join(stat_lines) + "\n")
    (meta / "tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks))
    )
    scalar = {"shape": [1], "names": None}
    info = {
        "codebase_version": "v2.1",
        "robot_type": f"arm{dim}",
        "total_episodes": episodes,
        "total_frames": episodes * frames,
        "total_tasks": len(tasks),
        "total_videos": 0,
        "total_chunks": -(-episodes // 1000),
        "chunks_size": 1000,
        "fps": FPS,
        "splits": {"train": f"0:{episodes}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": None,
        "features": {
            "observation.state": {
                "dtype": "float32",
                "shape": [dim],
                "names": [f"joint_{i}" for i in range(dim)],
            },
            "action": {
                "dtype": "float32",
                "shape": [dim],
                "names": [f"act_{i}" for i in range(dim)],
            },
            "timestamp": {"dtype": "float32", **scalar},
            **{k: {"dtype": "int64", **scalar} for k in INDEX_KEYS[1:]},
        },
    }
    (meta / "info.json").write_text(json.dumps(info, indent=4))


def write_v3_source(root: Path, episodes: int, frames: int, dim: int, seed: int) -> None:
    """A v3.0 dataset written by rlkit's writer (state/action of ``dim``)."""
    from rlkit.lerobot import write_dataset

    rng = np.random.default_rng(seed)
    n = episodes * frames
    ep = np.repeat(np.arange(episodes, dtype=np.int64), frames)
    data = {
        "observation.state": rng.standard_normal((n, dim)).astype(np.float32),
        "action": rng.uniform(-1, 1, (n, dim)).astype(np.float32),
        "episode_index": ep,
        "task_index": ep % 2,
    }
    write_dataset(root, data, fps=FPS, tasks=[f"task {seed}", "shared task"])


# ---------------------------------------------------------------------- the baseline
def baseline_merge(sources: list[Path], output: Path, pad_to: int | None) -> dict[str, Any]:
    """The per-row v2.1 merge loop (any4lerobot style), re-implemented faithfully.

    Per episode: ``pd.read_parquet``, ``df[col].apply(lambda x: np.pad(x, ...))`` for the
    padded vector columns (a Python call per row; the result is an object column of float64
    arrays, written as ``list<double>``), ``episode_index``/``index``/``task_index`` rewritten,
    ``to_parquet``. Metadata: episodes/tasks jsonl, per-episode stats padded with zeros and
    pooled by plain averaging of the stds (no between-group term), as that tool does.
    """
    import pandas as pd

    infos = [json.loads((s / "meta/info.json").read_text()) for s in sources]
    vec_keys = [
        k
        for k, f in infos[0]["features"].items()
        if f["dtype"].startswith("float") and f["shape"] != [1]
    ]
    target = {k: pad_to or max(i["features"][k]["shape"][0] for i in infos) for k in vec_keys}
    (output / "meta").mkdir(parents=True)
    tasks: dict[str, int] = {}
    ep_out, stats_out = [], []
    new_ep, new_index = 0, 0
    for src in sources:
        src_tasks = {}
        for line in (src / "meta/tasks.jsonl").read_text().splitlines():
            row = json.loads(line)
            src_tasks[row["task_index"]] = tasks.setdefault(row["task"], len(tasks))
        episodes = [json.loads(x) for x in (src / "meta/episodes.jsonl").read_text().splitlines()]
        ep_stats = {
            json.loads(x)["episode_index"]: json.loads(x)["stats"]
            for x in (src / "meta/episodes_stats.jsonl").read_text().splitlines()
        }
        for ep in episodes:
            e = ep["episode_index"]
            df = pd.read_parquet(src / f"data/chunk-{e // 1000:03d}/episode_{e:06d}.parquet")
            for key in vec_keys:
                dim = target[key]
                df[key] = df[key].apply(
                    lambda x, d=dim: np.pad(np.asarray(x, dtype=np.float64), (0, d - len(x)))
                )
            df["episode_index"] = new_ep
            df["index"] = np.arange(new_index, new_index + len(df))
            df["task_index"] = df["task_index"].map(src_tasks)
            path = output / f"data/chunk-{new_ep // 1000:03d}/episode_{new_ep:06d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            df.to_parquet(path)
            st = ep_stats[e]
            for key in vec_keys:
                for name in ("min", "max", "mean", "std"):
                    v = st[key][name]
                    st[key][name] = v + [0.0] * (target[key] - len(v))
            stats_out.append({"episode_index": new_ep, "stats": st})
            ep_out.append({**ep, "episode_index": new_ep})
            new_ep += 1
            new_index += len(df)
    stats = {}
    for key in vec_keys:  # pooled without the between-group term, as the tool does
        means = np.array([s["stats"][key]["mean"] for s in stats_out])
        stds = np.array([s["stats"][key]["std"] for s in stats_out])
        stats[key] = {"mean": means.mean(0).tolist(), "std": stds.mean(0).tolist()}
    (output / "meta/stats.json").write_text(json.dumps(stats))
    (output / "meta/episodes.jsonl").write_text("\n".join(json.dumps(x) for x in ep_out))
    (output / "meta/episodes_stats.jsonl").write_text("\n".join(json.dumps(x) for x in stats_out))
    (output / "meta/tasks.jsonl").write_text(
        "\n".join(json.dumps({"task_index": i, "task": t}) for t, i in tasks.items())
    )
    info = dict(infos[0], total_episodes=new_ep, total_frames=new_index, total_tasks=len(tasks))
    (output / "meta/info.json").write_text(json.dumps(info, indent=4))
    return {"episodes": new_ep, "frames": new_index}


# ---------------------------------------------------------------------- one case, in-process
def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one merge (rlkit or baseline) in this process; wall time and peak RSS."""
    import pandas  # noqa: F401  (imports are not merge work: load them before the clock)
    import pyarrow.parquet  # noqa: F401

    from rlkit.lerobot.merge import MergeConfig, merge
    from rlkit.lerobot.validate import validate_dataset  # noqa: F401

    sources = [Path(s) for s in spec["sources"]]
    out = Path(spec["output"])
    t0 = time.perf_counter()
    if spec["impl"] == "baseline":
        res = baseline_merge(sources, out, spec.get("pad_to"))
        extra = {"frames": res["frames"], "episodes": res["episodes"]}
    else:
        cfg = MergeConfig(
            sources=[str(s) for s in sources],
            output=str(out),
            output_version=spec["version"],
            pad_to=spec.get("pad_to"),
            workers=spec.get("workers"),
            validate=not spec.get("no_validate", False),
            overwrite=True,
        )
        r = merge(cfg, progress=False)
        extra = {
            "frames": r.frames,
            "episodes": r.episodes,
            "data_files": r.data_files,
            "phases_s": r.phases_s,
        }
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"wall_s": wall, "peak_rss_mb": peak_kb / 1024, "rlkit": imported_rlkit(), **extra}


def run_subprocess(spec: dict[str, Any], repo: Path = REPO) -> dict[str, Any]:
    """One case in a fresh process that imports ``rlkit`` from ``repo``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-case", json.dumps(spec)]
    proc = subprocess.run(cmd, env=checkout_env(repo), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"case {spec} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    shutil.rmtree(spec["output"], ignore_errors=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    check_imported(res["rlkit"], repo, f"case {spec['impl']} {spec['version']}")
    return res


def measure(spec: dict[str, Any], repeats: int, repos: tuple[Path, ...] = (REPO,)) -> list[dict]:
    """``repeats`` runs of ``spec`` per checkout in ``repos``, interleaved (A B A B ...) so that
    the other tenants' load hits each alike; one summary per checkout, in ``repos`` order."""
    runs: dict[Path, list[dict[str, Any]]] = {r: [] for r in repos}
    for _ in range(repeats):
        for repo in repos:
            runs[repo].append(run_subprocess(spec, repo))
    return [summarise(spec, runs[r]) | {"repo": str(r)} for r in repos]


def summarise(spec: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [r["wall_s"] for r in runs]
    best = runs[int(np.argmin(walls))]
    frames = best["frames"]
    return {
        **{k: v for k, v in spec.items() if k not in ("sources", "output")},
        "wall_s_best": min(walls),
        "wall_s_median": statistics.median(walls),
        "wall_s": walls,
        "frames": frames,
        "frames_per_s": frames / min(walls),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "episodes": best["episodes"],
        "data_files": best.get("data_files"),
        "phases_s": best.get("phases_s"),
        "rlkit": best["rlkit"],
    }


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench_merge.py",
        description=(
            "Wall time, frames/s and peak RSS of rlkit's LeRobot merger against a per-row "
            "pandas.apply(np.pad) baseline; prints a table and writes the figures to JSON."
        ),
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of seconds")
    add_output_args(p, NAME)
    p.add_argument("--episodes", type=int, default=None, help="v2.1 episodes per source (1000)")
    p.add_argument("--frames", type=int, default=None, help="frames per v2.1 episode (500)")
    p.add_argument("--v3-episodes", type=int, default=None, help="v3.0 episodes per source (100)")
    p.add_argument("--v3-frames", type=int, default=None, help="frames per v3.0 episode (400)")
    p.add_argument("--repeats", type=int, default=None, help="runs per case (rlkit 3, baseline 1)")
    p.add_argument("--workers", type=int, default=None, help="merger threads (default: auto)")
    p.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: system tmp)")
    add_compare_arg(p)
    p.add_argument("--run-case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_compare_arg(p, args)
    q = args.quick
    args.episodes = args.episodes or (20 if q else 1000)
    args.frames = args.frames or (50 if q else 500)
    args.v3_episodes = args.v3_episodes or (10 if q else 100)
    args.v3_frames = args.v3_frames or (40 if q else 400)
    args.repeats = args.repeats or (1 if q else 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_case:
        print(json.dumps(run_case(json.loads(args.run_case))))
        return 0
    t_run = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="rlkit-bench-merge-", dir=args.tmp))
    try:
        print("writing synthetic sources ...", file=sys.stderr)
        t0 = time.perf_counter()
        v21 = [tmp / "v21_a", tmp / "v21_b"]
        write_v21_source(v21[0], args.episodes, args.frames, 14, seed=0)
        write_v21_source(v21[1], args.episodes, args.frames, 7, seed=1)
        v3 = [tmp / "v3_a", tmp / "v3_b"]
        write_v3_source(v3[0], args.v3_episodes, args.v3_frames, 14, seed=2)
        write_v3_source(v3[1], args.v3_episodes, args.v3_frames, 7, seed=3)
        gen_s = time.perf_counter() - t0
        out = str(tmp / "out")
        cases: list[tuple[str, dict[str, Any], int]] = []
        for pad in (None, 32):
            for version in ("v3.0", "v2.1"):
                spec = {"impl": "rlkit", "version": version, "pad_to": pad}
                cases.append(("v21", spec, args.repeats))
            cases.append(("v21", {"impl": "baseline", "version": "v2.1", "pad_to": pad}, 1))
        cases.append(("v3", {"impl": "rlkit", "version": "v3.0", "pad_to": None}, args.repeats))
        results = []
        for src_kind, spec, repeats in cases:
            sources = v21 if src_kind == "v21" else v3
            spec = {**spec, "sources": [str(s) for s in sources], "output": out}
            spec["workers"] = args.workers
            label = f"{spec['impl']} {src_kind}->{spec['version']} pad_to={spec['pad_to']}"
            print(f"{label} ({repeats}x) ...", file=sys.stderr)
            repos = (REPO,)
            if spec["impl"] == "rlkit" and args.compare_with is not None:
                repos = (REPO, args.compare_with)
            for res, tag in zip(measure(spec, repeats, repos), ("", " (compared)"), strict=False):
                res["sources"] = src_kind
                res["impl"] += tag
                results.append(res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def find(impl: str, src: str, version: str, pad: int | None) -> dict[str, Any] | None:
        for r in results:
            if (r["impl"], r["sources"], r["version"], r["pad_to"]) == (impl, src, version, pad):
                return r
        return None

    rows = []
    compared = []
    for r in results:
        if r["impl"] == "rlkit (compared)":
            now = find("rlkit", r["sources"], r["version"], r["pad_to"])
            assert now is not None
            compared.append((r, now))
        base = (
            find("baseline", r["sources"], "v2.1", r["pad_to"]) if r["sources"] == "v21" else None
        )
        ratio = base["wall_s_best"] / r["wall_s_best"] if base and r["impl"] == "rlkit" else None
        srcs = (
            f"v2.1 2x{args.episodes}x{args.frames}"
            if r["sources"] == "v21"
            else f"v3.0 2x{args.v3_episodes}x{args.v3_frames}"
        )
        rows.append(
            [
                r["impl"],
                srcs,
                r["version"],
                str(r["pad_to"] or "max (14)"),
                f"{r['wall_s_best']:.2f}",
                f"{r['frames_per_s']:,.0f}",
                f"{r['peak_rss_mb']:,.0f}",
                f"{ratio:.1f}x" if ratio else "-",
            ]
        )
    print()
    print_table(
        ["merger", "sources", "output", "pad to", "wall s", "frames/s", "peak RSS MB", "vs base"],
        rows,
    )
    if compared:
        print(f"\nThis checkout against {args.compare_with} (interleaved runs; best and median):")
        print_table(
            ["sources", "output", "pad to", "wall s now", "wall s compared", "now/compared",
             "median now/compared", "RSS MB now", "RSS MB compared"],
            [
                [old["sources"], old["version"], str(old["pad_to"] or "max"),
                 f"{now['wall_s_best']:.2f}", f"{old['wall_s_best']:.2f}",
                 f"{now['wall_s_best'] / old['wall_s_best']:.2f}",
                 f"{now['wall_s_median'] / old['wall_s_median']:.2f}",
                 f"{now['peak_rss_mb']:,.0f}", f"{old['peak_rss_mb']:,.0f}"]
                for old, now in compared
            ],
        )  # fmt: skip
    main_case = find("rlkit", "v21", "v3.0", None)
    v3_case = find("rlkit", "v3", "v3.0", None)
    assert main_case is not None and v3_case is not None
    goals = {
        "v21_1M_frames_s": GOAL_V21_S,
        "v21_meets": main_case["wall_s_best"] <= GOAL_V21_S,
        "v3_s": GOAL_V3_S,
        "v3_meets": v3_case["wall_s_best"] <= GOAL_V3_S,
    }
    print(
        f"\nv2.1 2x{args.episodes}x{args.frames} -> v3.0: {main_case['wall_s_best']:.2f} s "
        f"({'meets' if goals['v21_meets'] else 'MISSES'} the {GOAL_V21_S:g} s goal); "
        f"v3.0 2x{args.v3_episodes}x{args.v3_frames}: {v3_case['wall_s_best']:.2f} s "
        f"({'meets' if goals['v3_meets'] else 'MISSES'} the {GOAL_V3_S:g} s goal)"
    )
    if args.quick:
        print("  (--quick sizes: the figures mean nothing)")
    record = report_header(NAME, t_run)
    record["settings"] = {
        "quick": args.quick,
        "v21_sources": {
            "count": 2,
            "episodes": args.episodes,
            "frames": args.frames,
            "dims": [14, 7],
        },
        "v3_sources": {
            "count": 2,
            "episodes": args.v3_episodes,
            "frames": args.v3_frames,
            "dims": [14, 7],
        },
        "repeats": args.repeats,
        "workers": args.workers,
        "compare_with": str(args.compare_with) if args.compare_with else None,
        "source_write_s": gen_s,
        "wall_s": "in-process wall time of the merge call, best of the repeats (subprocess each)",
        "rlkit": "rlkit.lerobot.merge.merge, output validated (validate_dataset) before publish",
        "baseline": "per-episode pandas read, Series.apply(np.pad) per row, to_parquet (v2.1)",
    }
    record["results"] = results
    record["goals"] = goals
    save_record(args, NAME, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
