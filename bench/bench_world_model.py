"""Benchmark: the world model's data path, rendering, training step and planning on this machine.

Measures, in one run (every ratio from figures taken in this run):

1. Pixel rendering, ms per 64x64 frame: the numpy pendulum rasteriser, gymnasium's pygame
   renderer at 500 px shrunk with PIL's box filter (if pygame is installed), the racing env.
2. ``--episodes`` pixel-Pendulum episodes (random policy, action repeat 2, 100 actions each)
   written with ``EpisodeStorage``; then discovery (headers only) and discovery + loading
   (full decompression) with ``--no-parallel-loading`` (1 thread) and 2 / 4 threads, best
   of ``--repeats`` interleaved runs (goal: >= 1.7x for loading on 2 cores).
3. Batch assembly at B=50, T=50 (ms and minor page faults per batch, as handed over and
   as ready float32 tensors): the seed's path (per-item float32 conversion + ``torch.stack``
   + permute) vs rlkit's uint8 gather into one reused time-major buffer converted once
   (goal >= 20x); the same for frames preloaded as float16 and float32 (RAM held). Each
   path allocates differently, and whether new memory page-faults depends on the process's
   malloc state, so this part runs twice, each in a fresh child process: under glibc's
   defaults (the seed's ~360 MB of new arrays per batch fault in, ~60k faults) and with
   freed memory reused (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` raised).
4. Lazy mode: LRU cache hit rate and ms per batch at cache sizes of 25 % and 100 % of the
   decoded data (steady state, after warm-up batches).
5. The 2-thread ceiling in the same rounds as step 2: GIL-free zlib inflate on 1 vs 2
   threads (on a shared machine the other tenants' load bounds every parallel speedup above).
6. World model train step (s) at the cpu preset (B=16, L=32) on 1 and 2 torch threads, float32
   and with bfloat16 convs, and CEM planning time per action (cpu preset: 300 candidates, 5
   iterations, horizon 12).

7. ``--learning-run RUN``: only the learning figures of a finished ``train_world_model.py``
   run: its newest checkpoint's planner vs the random policy vs the same planner on the true
   Pendulum dynamics (the "perfect model"), same episodes, and the run's reconstruction-loss
   curve (``bench_world_model_learning.json`` beside the other results).
8. ``--seeds S [S ...]``: only the learning bench across seeds: each seed a budgeted run
   (``--minutes``, ``--parallel``), each evaluated on the same ``--eval-episodes``; mean, IQM,
   95 % bootstrap CI and the worst seed against the baselines (``world_model_seeds.py``;
   ``bench_world_model_seeds_<env>.json``).
9. ``--ablation``: model and loss variants on fixed data, scored by open-loop prediction
   (``world_model_ablation.py``; ``bench_world_model_ablation.json``).

Usage::

    PYTHONPATH=. python bench/bench_world_model.py            # -> bench/results/local/
    PYTHONPATH=. python bench/bench_world_model.py --write-results  # -> bench/results/ (tracked)
    PYTHONPATH=. python bench/bench_world_model.py --quick    # smoke run, seconds
    PYTHONPATH=. python bench/bench_world_model.py --learning-run runs/world_model
    python bench/bench_world_model.py --seeds 0 1 2 --write-results       # pendulum, 30 min each
    python bench/bench_world_model.py --seeds 0 1 2 --env racing --parallel 3 \
        --bc-policy runs/bc/bc_policy.pt --write-results          # 60 min, 3 seeds at once
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:  # `python bench/bench_world_model.py` puts bench/ on sys.path
    from bench_env import (
        add_output_args,
        check_imported,
        checkout_env,
        imported_rlkit,
        output_path,
        print_table,
        report_header,
        save_record,
        write_json,
    )
except ImportError:  # `python -m bench.bench_world_model`
    from bench.bench_env import (
        add_output_args,
        check_imported,
        checkout_env,
        imported_rlkit,
        output_path,
        print_table,
        report_header,
        save_record,
        write_json,
    )

from rlkit.planet.dataset import EpisodeDataset, batch_to_device
from rlkit.planet.envs import make_pixel_env, render_pendulum
from rlkit.planet.episodes import make_planner, run_episode
from rlkit.planet.model import PRESETS, WorldModel
from rlkit.planet.planner import PlannerConfig
from rlkit.planet.storage import EpisodeStorage, load_episode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules beside this file
from world_model_ablation import ablation_run, print_ablation  # noqa: E402
from world_model_learning import baselines, evaluate_run, learning_curve, run_config  # noqa: E402
from world_model_seeds import print_seeds, seeds_run  # noqa: E402

NAME = "bench_world_model"
REPO = Path(__file__).resolve().parent.parent


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(best, median) wall seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def minor_faults() -> int:
    """Minor page faults of this process so far (a fresh page touched for the first time)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# ---------------------------------------------------------------------- 1. rendering
def bench_render(frames: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    thetas = np.linspace(-np.pi, np.pi, frames)
    t0 = time.perf_counter()
    for th in thetas:
        render_pendulum(float(th))
    out["pendulum_native_ms"] = 1e3 * (time.perf_counter() - t0) / frames
    try:
        env = make_pixel_env("pendulum", render="gym")
        env.reset(seed=0)
        env.frame()  # pygame start-up
        t0 = time.perf_counter()
        for _ in range(frames):
            env.frame()
        out["pendulum_gym500_resized_ms"] = 1e3 * (time.perf_counter() - t0) / frames
        env.close()
    except ImportError:
        out["pendulum_gym500_resized_ms"] = None
    env = make_pixel_env("racing")
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(frames):
        env.frame()
    out["racing_native_ms"] = 1e3 * (time.perf_counter() - t0) / frames
    return out


# ---------------------------------------------------------------------- 2. storage
def write_episodes(root: Path, n: int) -> tuple[float, int]:
    env = make_pixel_env("pendulum", action_repeat=2)
    st = EpisodeStorage(root)
    t0 = time.perf_counter()
    for k in range(n):
        run_episode(env, k).save(st)
    nbytes = sum(p.stat().st_size for p in root.glob("episode_*.npz"))
    return time.perf_counter() - t0, nbytes


def bench_loading(root: Path, repeats: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Discovery and loading on 1, 2 and 4 threads, and the machine's 2-thread ceiling
    (:func:`inflate_ceiling`), all interleaved in each of ``repeats`` rounds so that the
    other tenants' load hits every setting and the ceiling alike; best of the rounds."""
    rows = {w: {"threads": w, "discover": [], "load": []} for w in (1, 2, 4)}
    inflate = inflate_ceiling()
    ceiling: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for w, row in rows.items():
            st = EpisodeStorage(root, workers=w)
            t0 = time.perf_counter()
            st.discover()
            row["discover"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            EpisodeDataset(st, 50, 50, 1)
            row["load"].append(time.perf_counter() - t0)
        for w in (1, 2):
            ceiling[w].append(inflate(w))
    out = []
    for w, row in rows.items():
        out.append(
            {
                "threads": w,
                "mode": "--no-parallel-loading" if w == 1 else f"--loading-workers {w}",
                "discover_s": min(row["discover"]),
                "discover_median_s": statistics.median(row["discover"]),
                "load_s": min(row["load"]),
                "load_median_s": statistics.median(row["load"]),
            }
        )
    for r in out:
        r["discover_speedup"] = out[0]["discover_s"] / r["discover_s"]
        r["load_speedup"] = out[0]["load_s"] / r["load_s"]
    return out, {"inflate_1_thread_s": min(ceiling[1]), "inflate_2_threads_s": min(ceiling[2]),
                 "speedup_2_threads": min(ceiling[1]) / min(ceiling[2])}  # fmt: skip


def inflate_ceiling() -> Callable[[int], float]:
    """What the machine gives two threads right now: a timer of zlib inflate (which releases
    the GIL) of 8 x 20 MB on ``w`` threads, one call each with the output size known, as the
    episode reader does. On a shared machine this bounds any loading speedup."""
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    blob = zlib.compress(rng.integers(0, 4, 20_000_000, dtype=np.uint8).tobytes())

    def run(w: int) -> float:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(w) as pool:
            list(pool.map(lambda _: zlib.decompress(blob, bufsize=20_000_000), range(8)))
        return time.perf_counter() - t0

    return run


# ---------------------------------------------------------------------- 3. batches
class SeedStyleDataset(torch.utils.data.Dataset):
    """The seed's ``EpisodeDataset.__getitem__``: one random slice, converted to float32
    per item; batches via ``collate_episode_batch`` (torch.stack + permute)."""

    def __init__(self, episodes: list[dict[str, np.ndarray]], seq_len: int) -> None:
        self.episodes, self.seq_len = episodes, seq_len
        # rlkit's loader hands out read-only views (np.load's arrays were writable); these
        # tensors are only read, so torch's warning about it is noise here.
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, _idx: int):
        ep = self.episodes[np.random.randint(len(self.episodes))]
        i = np.random.randint(len(ep["reward"]) - self.seq_len + 1)
        L = self.seq_len
        obs = ep["obs"][i : i + L].astype(np.float32) / 255.0
        return (
            torch.from_numpy(obs),
            torch.from_numpy(ep["action"][i : i + L]),
            torch.from_numpy(ep["reward"][i : i + L]),
            torch.from_numpy(ep["terminal"][i : i + L]),
        )


def collate_episode_batch(batch):
    obs, action, reward, terminal = zip(*batch, strict=True)
    return (
        torch.stack(obs).permute(1, 0, 2, 3, 4),
        torch.stack(action).permute(1, 0, 2),
        torch.stack(reward).permute(1, 0),
        torch.stack(terminal).permute(1, 0),
    )


#: The two allocator states a batch path can meet. The seed's path allocates ~360 MB of new
#: arrays per batch; under glibc's defaults the large ones are mmapped and returned on free,
#: so every page faults in again (~60k minor faults per batch). A process whose allocator
#: keeps freed memory ("reuse") pays none, and which state a long-lived process is in
#: depends on its allocation history, so each is timed in a fresh child process.
MALLOC_SETTINGS = {
    "default": {},
    "reuse": {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824"},
}


def bench_batches(root: Path, n_batches: int, repeats: int) -> dict[str, Any]:
    """ms and minor page faults per batch of each path, as the loader hands it over
    ("assembly") and once converted to float32 model input (on CPU here; on a GPU rlkit
    converts there). Runs in this process: see :func:`bench_batches_per_malloc`."""
    B, T = 50, 50
    st = EpisodeStorage(root, workers=4)
    cpu = torch.device("cpu")
    seed_ds = SeedStyleDataset([ep for _, ep in st.load(st.discover())], T)

    def timed(fn: Callable[[], None]) -> tuple[float, float, float]:
        """(best ms, median ms, minor faults) per batch over ``repeats`` calls of ``fn``,
        after one untimed call (first-touch of reused buffers and of the heap)."""
        fn()
        f0 = minor_faults()
        best, med = best_of(fn, repeats)
        faults = (minor_faults() - f0) / (repeats * n_batches)
        return 1e3 * best / n_batches, 1e3 * med / n_batches, faults

    def seed_path() -> None:
        for _ in range(n_batches):
            collate_episode_batch([seed_ds[0] for _ in range(B)])

    seed_ms, seed_med, seed_faults = timed(seed_path)
    seed_ds.episodes = []  # free the float path's copies
    out: dict[str, Any] = {
        "batch_size": B,
        "seq_len": T,
        "seed_ms": seed_ms,
        "seed_median_ms": seed_med,
        "seed_minor_faults": seed_faults,
        "rlkit": [],
    }
    for dtype in ("uint8", "float16", "float32"):
        ds = EpisodeDataset(st, T, B, n_batches, preload_dtype=dtype)

        def assemble(ds: EpisodeDataset = ds) -> None:
            for k in range(n_batches):
                torch.from_numpy(ds.sample_batch(k * B, reuse=True).obs)

        def convert(ds: EpisodeDataset = ds) -> None:
            for k in range(n_batches):
                batch_to_device(ds.sample_batch(k * B, reuse=True), cpu)

        a_ms, a_med, a_faults = timed(assemble)
        c_ms, c_med, c_faults = timed(convert)
        out["rlkit"].append(
            {
                "preload_dtype": dtype,
                "assembly_ms": a_ms,
                "assembly_median_ms": a_med,
                "assembly_minor_faults": a_faults,
                "with_float32_cpu_ms": c_ms,
                "with_float32_cpu_median_ms": c_med,
                "with_float32_cpu_minor_faults": c_faults,
                "ram_mb": ds.nbytes / 1024**2,
                "assembly_speedup_vs_seed": seed_ms / a_ms,
                "with_float32_speedup_vs_seed": seed_ms / c_ms,
            }
        )
        del ds
    return out


def bench_batches_per_malloc(root: Path, n_batches: int, repeats: int) -> dict[str, Any]:
    """:func:`bench_batches` in a fresh child process per :data:`MALLOC_SETTINGS` entry, so
    that neither this process's allocation history nor the order of the paths decides
    whether their memory page-faults."""
    out = {}
    for name, env in MALLOC_SETTINGS.items():
        cmd = [sys.executable, __file__, "--batches-child", str(root)]
        cmd += ["--repeats", str(repeats), "--batches", str(n_batches)]
        # Only the settings' own variables differ between the children, which import this
        # checkout's rlkit (not whichever one is installed).
        base = {k: v for k, v in checkout_env(REPO).items() if not k.startswith("MALLOC_")}
        res = subprocess.run(cmd, env={**base, **env}, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"the batch bench's {name} child failed:\n{res.stderr}")
        out[name] = {"env": env, **json.loads(res.stdout.strip().splitlines()[-1])}
        check_imported(out[name]["rlkit_path"], REPO, f"the batch bench's {name} child")
    return out


def bench_cache(root: Path, n_batches: int) -> list[dict[str, Any]]:
    """Lazy mode: ``n_batches`` warm-up batches fill the cache, then the hit rate and
    ms/batch of the next ``2 * n_batches`` (steady state; uniform draws over episodes, so
    the expected hit rate is the cached fraction)."""
    st = EpisodeStorage(root, workers=4)
    total_mb = sum(i.nbytes for i in st.discover()) / 1024**2
    rows = []
    for frac in (0.25, 1.0):
        ds = EpisodeDataset(st, 50, 50, n_batches, cache_mb=frac * total_mb * 1.01)
        for k in range(n_batches):
            ds.sample_batch(k * 50, reuse=True)
        ds.cache_hits = ds.cache_misses = 0
        t0 = time.perf_counter()
        for k in range(n_batches, 3 * n_batches):
            ds.sample_batch(k * 50, reuse=True)
        rows.append(
            {
                "cache_fraction": frac,
                "cache_mb": frac * total_mb,
                "hit_rate": ds.cache_hit_rate,
                "ms": 1e3 * (time.perf_counter() - t0) / (2 * n_batches),
            }
        )
    return rows


# ---------------------------------------------------------------------- 5. model
def bench_model(root: Path, steps: int) -> dict[str, Any]:
    st = EpisodeStorage(root, workers=4)
    sizes = PRESETS["cpu"]
    ds = EpisodeDataset(st, 32, 16, steps)
    out: dict[str, Any] = {"preset": "cpu", "batch_size": 16, "seq_len": 32, "train_step_s": {}}
    # the precisions interleaved per thread count: the same load for both
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for bf16 in (False, True):
            key = f"{threads}{' bf16' if bf16 else ''}"
            torch.manual_seed(0)
            model = WorldModel(1, sizes, bf16_convs=bf16)
            opt = torch.optim.Adam(model.parameters(), 1e-3, eps=1e-4)
            times = []
            for k in range(steps + 1):
                t0 = time.perf_counter()
                loss, _ = model.loss(
                    batch_to_device(ds.sample_batch(k * 16, reuse=True), torch.device("cpu"))
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t0)
            out["train_step_s"][key] = min(times[1:])  # first step: allocator warm-up
            out.setdefault("train_step_median_s", {})[key] = statistics.median(times[1:])
    # planning: one action from a belief state, cpu preset CEM sizes
    cfg = PlannerConfig(horizon=12, candidates=300, top_k=30, iterations=5)
    plan_times = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        planner = make_planner(model, cfg, 0)
        state = model.initial_state(1)
        with torch.no_grad():
            planner.plan(state)
            t0 = time.perf_counter()
            for _ in range(3):
                planner.plan(state)
        plan_times[str(threads)] = (time.perf_counter() - t0) / 3
    out["plan_s_per_action"] = plan_times
    return out


# ---------------------------------------------------------------------- 7. learning
def bench_learning(run: Path, episodes: int, checkpoint: str | None) -> dict[str, Any]:
    """``--learning-run``: the run's planner vs the baselines, same episodes; its curve."""
    out = evaluate_run(run, episodes, checkpoint)
    out["baselines"] = baselines(run_config(run), episodes)
    out["curve"] = learning_curve(run)
    return out


def print_learning(res: dict[str, Any]) -> None:
    print(
        f"\nLearning: {res['run']} ({res['checkpoint']}, iteration {res['iteration']}, saved "
        f"{res['checkpoint_minutes_after_start']:.1f} min after the run started)"
    )
    print_table(
        ["iteration", "train step", "minutes", "recon loss", "collect return"],
        [
            [
                c["iteration"],
                c["train_step"],
                f"{c['minutes']:.1f}",
                f"{c['obs_loss']:.1f}",
                f"{c['train_return']:.0f}",
            ]
            for c in res["curve"]
        ],  # fmt: skip
    )
    named = {"planner + learned model": res["planner"], **res["baselines"]}
    racing = "lap_rate" in res["planner"]
    rows = [
        [name.replace("_", " "), f"{b['mean']:.1f}"]
        + ([f"{100 * b['lap_rate']:.0f}%"] if racing else [])
        for name, b in named.items()
    ]
    n = len(res["planner"]["returns"])
    head = [f"policy ({n} episodes, same seeds)", "mean return"] + (["laps"] if racing else [])
    print_table(head, rows)
    gain = res["planner"]["mean"] - res["baselines"]["random"]["mean"]
    print(f"planner - random: {gain:+.1f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--episodes", type=int, default=None, help="episodes written (default 500)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5)")
    add_output_args(p, NAME)
    p.add_argument(
        "--learning-run",
        type=Path,
        default=None,
        help="only evaluate this train_world_model.py output folder (planner vs random vs "
        "true dynamics) and write bench_world_model_learning.json beside the JSON results",
    )
    p.add_argument(
        "--eval-episodes",
        type=int,
        default=10,
        help="evaluation episodes for --learning-run and --seeds (the same for every run)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="only the learning bench: train these seeds for --minutes each, evaluate each "
        "seed's planner, report mean, IQM and 95%% bootstrap CI (..._seeds_ENV.json)",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="only the model ablation: model/loss variants trained --minutes each (default 5) "
        "on fixed pendulum data, scored by open-loop prediction (..._ablation.json)",
    )
    p.add_argument("--env", choices=("pendulum", "racing"), default="pendulum", help="--seeds env")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="--seeds: wall-clock budget per seed (default: pendulum 30, racing 60); "
        "--ablation: per arm (default 5)",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="--seeds: seeds trained at once, with cores / P torch threads each (default 1)",
    )
    p.add_argument(
        "--work", default=None, help="--seeds / --ablation: folder of the runs or data (kept)"
    )
    p.add_argument(
        "--wm-args",
        default=None,
        help="--seeds: train_world_model.py flags, one string (default: pendulum none, racing "
        "'--camera-view ego'; the goals are judged with the default only)",
    )
    p.add_argument(
        "--bc-policy",
        type=Path,
        default=None,
        help="--seeds --env racing: a bc_policy.pt (train_bc.py) to report beside the expert",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file name under RUN/checkpoints for --learning-run (default: newest)",
    )
    p.add_argument("--batches-child", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--batches", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.batches_child is not None:  # one malloc setting of bench_batches_per_malloc
        res = bench_batches(args.batches_child, args.batches, args.repeats)
        res["rlkit_path"] = imported_rlkit()
        print(json.dumps(res))
        return 0
    mode = None  # the learning benches run alone: (run, print, JSON name)
    if args.ablation:
        mode = (ablation_run, print_ablation, f"{NAME}_ablation")
    elif args.seeds is not None:
        mode = (seeds_run, print_seeds, f"{NAME}_seeds_{args.env}")
    if mode is not None:
        run, show, name = mode
        t0 = time.perf_counter()
        report = run(args)
        show(report)
        write_json(output_path(args, name), {**report_header(name, t0), **report})
        print(f"\nwrote {output_path(args, name)}")
        return 0
    if args.learning_run is not None:
        t0 = time.perf_counter()
        res = bench_learning(args.learning_run, args.eval_episodes, args.checkpoint)
        print_learning(res)
        path = args.output or output_path(args, NAME).with_name(f"{NAME}_learning.json")
        write_json(path, {**report_header(NAME, t0), "learning": res})
        print(f"\nwrote {path}")
        return 0
    n_eps = args.episodes or (20 if args.quick else 500)
    repeats = args.repeats or (1 if args.quick else 5)
    n_batches = 2 if args.quick else 10
    t_start = time.perf_counter()
    threads0 = torch.get_num_threads()

    print("rendering ...", file=sys.stderr)
    render = bench_render(50 if args.quick else 500)
    with tempfile.TemporaryDirectory(prefix="rlkit-bench-wm-") as td:
        root = Path(td) / "episodes"
        print(f"writing {n_eps} episodes ...", file=sys.stderr)
        write_s, disk = write_episodes(root, n_eps)
        print("loading ...", file=sys.stderr)
        loading, ceiling = bench_loading(root, repeats)
        print("batches ...", file=sys.stderr)
        batches = bench_batches_per_malloc(root, n_batches, repeats)
        cache = bench_cache(root, n_batches)
        print("model ...", file=sys.stderr)
        model = bench_model(root, 2 if args.quick else 5)
        raw_mb = load_episode(next(root.glob("episode_*.npz")))["obs"].nbytes / 1024**2
    torch.set_num_threads(threads0)

    print("\nPixel rendering, ms per 64x64 frame")
    print_table(
        ["renderer", "ms/frame"],
        [[k.removesuffix("_ms"), "n/a" if v is None else f"{v:.3f}"] for k, v in render.items()],
    )
    print(
        f"\n{n_eps} episodes (100 actions, 101 frames each): written in {write_s:.1f} s, "
        f"{disk / 1024**2:.1f} MB on disk ({raw_mb:.2f} MB of frames per episode in RAM)"
    )
    print_table(
        ["loading", "discover s", "speedup", "discover+load s", "speedup"],
        [
            [
                r["mode"],
                f"{r['discover_s']:.3f}",
                f"{r['discover_speedup']:.2f}x",
                f"{r['load_s']:.2f}",
                f"{r['load_speedup']:.2f}x",
            ]
            for r in loading
        ],
    )
    print(
        f"2-thread ceiling (GIL-free zlib inflate, interleaved with the loading rounds): "
        f"{ceiling['speedup_2_threads']:.2f}x"
    )
    for name, res in batches.items():
        how = {"default": "glibc's defaults", "reuse": "freed memory reused"}[name]
        print(
            f"\nBatches, B=50 x T=50 (best of {repeats}; malloc: {how}, fresh process): as "
            "handed over by the loader, and as float32"
        )
        rows = [
            [
                "seed: per-item float32 + torch.stack",
                f"{res['seed_ms']:.1f}",
                "1.0x",
                f"{res['seed_ms']:.1f}",
                "1.0x",
                f"{res['seed_minor_faults']:.0f}",
                "-",
            ]
        ]
        rows += [
            [
                f"rlkit: {r['preload_dtype']} gather into one buffer",
                f"{r['assembly_ms']:.1f}",
                f"{r['assembly_speedup_vs_seed']:.1f}x",
                f"{r['with_float32_cpu_ms']:.1f}",
                f"{r['with_float32_speedup_vs_seed']:.1f}x",
                f"{r['assembly_minor_faults']:.0f} / {r['with_float32_cpu_minor_faults']:.0f}",
                f"{r['ram_mb']:.0f}",
            ]
            for r in res["rlkit"]
        ]
        print_table(
            ["path", "ms/batch", "speedup", "+ float32 on CPU ms", "speedup", "faults/batch",
             "RAM MB"],
            rows,
        )  # fmt: skip
    print(f"\nLazy mode (--cache-images): LRU cache, steady state over {2 * n_batches} batches")
    print_table(
        ["cache size", "MB", "hit rate", "ms/batch"],
        [
            [
                f"{100 * r['cache_fraction']:.0f} % of data",
                f"{r['cache_mb']:.0f}",
                f"{100 * r['hit_rate']:.1f} %",
                f"{r['ms']:.1f}",
            ]
            for r in cache
        ],  # fmt: skip
    )
    print("\nWorld model, cpu preset (B=16, L=32), best step")
    step = model["train_step_s"]
    print_table(
        ["torch threads", "train step s (fp32)", "bf16 convs", "speedup", "plan s/action"],
        [
            [
                t,
                f"{step[t]:.2f}",
                f"{step[t + ' bf16']:.2f}",
                f"{step[t] / step[t + ' bf16']:.2f}x",
                f"{model['plan_s_per_action'][t]:.3f}",
            ]
            for t in ("1", "2")
        ],
    )
    report = {
        **report_header(NAME, t_start),
        "settings": {
            "quick": args.quick,
            "episodes": n_eps,
            "repeats": repeats,
            "batches_per_timing": n_batches,
        },  # fmt: skip
        "render": render,
        "episodes": {"write_s": write_s, "disk_mb": disk / 1024**2, "frames_mb_each": raw_mb},
        "loading": loading,
        "parallel_ceiling": ceiling,
        "batches": batches,
        "cache": cache,
        "model": model,
    }
    save_record(args, NAME, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
