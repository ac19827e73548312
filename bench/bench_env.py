"""Benchmark: racing env throughput, single env vs SB3 vec envs vs ``RacingVecEnv``.

Measures, in one run on this machine:

1. ``RacingEnv`` steps/s (one env, random actions, reset on done; reset cost included).
2. ``RacingVecEnv`` car-steps/s at each ``--cars`` N through the SB3 ``VecEnv`` API
   (``env.step``, auto-reset included). Two action sources (``--vec-actions``):
   ``expert`` (the expert plus Gaussian noise, so episodes are realistic; only ``env.step`` is
   inside the timer, the expert's own time is reported separately) and ``random`` (the same
   action distribution as the SB3 baselines, so the ratio compares like with like).
3. SB3 ``DummyVecEnv`` and ``SubprocVecEnv`` (forkserver) of ``--sb3-envs`` single envs,
   env-steps/s summed over the envs, random actions.
4. Ratios of every ``RacingVecEnv`` figure to ``SubprocVecEnv`` (project target: >= 20x).

Random actions are steer ~ U[-1, 1], throttle ~ U[0, 1]. Every rate is the median of
``--repeats`` timed rounds after a warm-up; all figures are measured in this run.

Usage::

    PYTHONPATH=. python bench/bench_env.py            # ~1 min -> bench/results/local/
    PYTHONPATH=. python bench/bench_env.py --write-results   # -> bench/results/ (tracked)
    PYTHONPATH=. python bench/bench_env.py --quick    # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.utils import write_json_atomic

NAME = "bench_env"
#: The tracked figures the README quotes; a plain run writes to the untracked ``local/``.
REPO = Path(__file__).resolve().parent.parent  # the checkout these benches belong to
RESULTS_DIR = REPO / "bench" / "results"
TARGET_RATIO = 20.0  # RacingVecEnv best car-steps/s over SubprocVecEnv(2) env-steps/s


# ---------------------------------------------------------------------- shared helpers
def machine_info() -> dict[str, Any]:
    """CPU, core count and library versions, for the JSON record."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    try:
        import torch

        cuda = bool(torch.cuda.is_available())
    except ImportError:
        cuda = False
    return {
        "cpu_count": len(os.sched_getaffinity(0)),
        "cpu_count_os": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": version("numpy"),
        "torch": version("torch"),
        "stable_baselines3": version("stable_baselines3"),
        "gymnasium": version("gymnasium"),
        "cuda_available": cuda,
        "loadavg_1_5_15": list(os.getloadavg()),
    }


def report_header(name: str, t_start: float) -> dict[str, Any]:
    """The fields every benchmark JSON starts with: name, command, time, wall, machine."""
    return {
        "benchmark": name,
        "command": [sys.executable, *sys.argv],
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": time.perf_counter() - t_start,
        "machine": machine_info(),
    }


def add_output_args(p: argparse.ArgumentParser, name: str) -> None:
    """``--output`` and ``--write-results``: where a benchmark writes its JSON."""
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"JSON results file (default: bench/results/local/{name}.json, untracked)",
    )
    p.add_argument(
        "--write-results",
        action="store_true",
        help=f"write the tracked bench/results/{name}.json (the figures the README quotes)",
    )


def add_compare_arg(p: argparse.ArgumentParser) -> None:
    """``--compare-with CHECKOUT``: also run the measured tool from another checkout."""
    p.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="also run every rlkit case with the rlkit of this checkout (e.g. `git worktree add "
        "/tmp/before COMMIT`), interleaved with this one's runs: a side-by-side regression check",
    )


def check_compare_arg(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a ``--compare-with`` folder without an ``rlkit`` package (the runs would
    silently import the installed one)."""
    other = args.compare_with
    if other is None:
        return
    if not (other / "rlkit" / "__init__.py").is_file():
        p.error(f"--compare-with {other}: no rlkit package there; pass a checkout's root "
                "(git worktree add /tmp/before COMMIT)")  # fmt: skip
    if other.resolve() == REPO:
        p.error(f"--compare-with {other}: that is this checkout; pass another one")
    args.compare_with = other.resolve()


def checkout_env(repo: Path) -> dict[str, str]:
    """This process's environment with ``repo`` first on ``PYTHONPATH``: a child started
    with it imports that checkout's ``rlkit``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    return env


def imported_rlkit() -> str:
    """The folder of the ``rlkit`` package this process imported (which checkout ran)."""
    import rlkit

    return str(Path(rlkit.__file__).resolve().parent)


def check_imported(rlkit_dir: str, repo: Path, what: str) -> None:
    """Stop if a child that reported :func:`imported_rlkit` ran another checkout's code."""
    if Path(rlkit_dir) != (repo / "rlkit").resolve():
        raise RuntimeError(f"{what} imported rlkit from {rlkit_dir}, not from {repo}")


def output_path(args: argparse.Namespace, name: str) -> Path:
    """``--output``, else the tracked file with ``--write-results``, else ``local/``."""
    if args.output is not None:
        return args.output
    return RESULTS_DIR / ("" if args.write_results else "local") / f"{name}.json"


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` atomically, NaN/inf as null (:func:`rlkit.utils.write_json_atomic`)."""
    write_json_atomic(path, record)


def save_record(args: argparse.Namespace, name: str, record: dict[str, Any]) -> Path:
    """Write a benchmark's JSON where ``--output`` / ``--write-results`` say; print where."""
    out = output_path(args, name)
    write_json(out, record)
    print(f"\nwrote {out}")
    return out


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Plain aligned table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))


# ---------------------------------------------------------------------- timing
def random_actions(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 2)`` random actions: steer ~ U[-1, 1], throttle ~ U[0, 1] (biased to drive)."""
    a = rng.uniform(-1.0, 1.0, (n, 2))
    a[:, 1] = np.abs(a[:, 1])
    return a


def timed_rounds(
    step: Callable[[], tuple[float, int]], seconds: float, repeats: int, warmup_s: float
) -> dict[str, Any]:
    """Run ``step`` in ``repeats`` rounds of ``seconds / repeats`` wall time each.

    ``step()`` does one unit of work and returns ``(timed_seconds, items)``: the seconds
    that count (e.g. only the ``env.step`` call) and the items done (steps, car-steps).
    A round's rate is ``sum(items) / sum(timed_seconds)``; the result is the median round.
    """
    t_end = time.perf_counter() + warmup_s
    while time.perf_counter() < t_end:
        step()
    rates, items_total, timed_total, calls_total = [], 0, 0.0, 0
    per_round = seconds / repeats
    for _ in range(repeats):
        timed, items, calls = 0.0, 0, 0
        t_end = time.perf_counter() + per_round
        while True:
            s, k = step()
            timed += s
            items += k
            calls += 1
            if time.perf_counter() >= t_end:
                break
        rates.append(items / timed)
        items_total += items
        timed_total += timed
        calls_total += calls
    return {
        "rate_median": statistics.median(rates),
        "rate_min": min(rates),
        "rate_max": max(rates),
        "rates": rates,
        "items": items_total,
        "calls": calls_total,
        "timed_s": timed_total,
    }


# ---------------------------------------------------------------------- measurements
def bench_single(seconds: float, repeats: int, warmup_s: float, seed: int) -> dict[str, Any]:
    """One ``RacingEnv``, random actions, reset on done (timed with the steps)."""
    from rlkit.envs.racing import RacingEnv

    env = RacingEnv()
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = random_actions(rng, 4096)
    state = {"k": 0, "resets": 0}

    def step() -> tuple[float, int]:
        a = actions[state["k"] % len(actions)]
        state["k"] += 1
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
            state["resets"] += 1
        return time.perf_counter() - t0, 1

    res = timed_rounds(step, seconds, repeats, warmup_s)
    res["resets"] = state["resets"]  # includes the warm-up
    env.close()
    return res


def bench_racing_vec(
    n: int,
    actions_kind: str,
    noise: float,
    seconds: float,
    repeats: int,
    warmup_s: float,
    seed: int,
) -> dict[str, Any]:
    """``RacingVecEnv(n)`` through ``VecEnv.step``; only ``env.step`` is timed."""
    from rlkit.envs.expert import Expert
    from rlkit.envs.vec_env import RacingVecEnv

    env = RacingVecEnv(n, seed=seed)
    env.reset()
    expert = Expert()
    rng = np.random.default_rng(seed)
    state = {"expert_s": 0.0, "expert_calls": 0, "dones": 0, "crashes": 0}

    def step() -> tuple[float, int]:
        if actions_kind == "expert":
            t0 = time.perf_counter()
            a = expert.act(env)
            state["expert_s"] += time.perf_counter() - t0
            state["expert_calls"] += 1
            a = np.clip(a + rng.normal(0.0, noise, a.shape), -1.0, 1.0)
        else:
            a = random_actions(rng, n)
        t0 = time.perf_counter()
        _, _, dones, infos = env.step(a)
        elapsed = time.perf_counter() - t0
        if dones.any():
            state["dones"] += int(dones.sum())
            state["crashes"] += sum(bool(infos[i]["off_track"]) for i in np.flatnonzero(dones))
        return elapsed, n

    # Warm up here, not in timed_rounds, so the counters cover the timed rounds only.
    t_end = time.perf_counter() + warmup_s
    while time.perf_counter() < t_end:
        step()
    state.update(expert_s=0.0, expert_calls=0, dones=0, crashes=0)
    res = timed_rounds(step, seconds, repeats, warmup_s=0.0)
    res["episodes_ended"] = state["dones"]
    res["episodes_off_track"] = state["crashes"]
    if actions_kind == "expert":
        res["expert_s"] = state["expert_s"]
        res["expert_ms_per_call"] = 1e3 * state["expert_s"] / max(1, state["expert_calls"])
        res["car_steps_per_s_incl_expert"] = res["items"] / (res["timed_s"] + state["expert_s"])
    env.close()
    return res


def bench_sb3(
    kind: str, n_envs: int, seconds: float, repeats: int, warmup_s: float, seed: int
) -> dict[str, Any]:
    """SB3 ``DummyVecEnv`` / ``SubprocVecEnv`` of single ``RacingEnv``; random actions."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from rlkit.envs.racing import RacingEnv

    factories = [lambda: RacingEnv() for _ in range(n_envs)]
    t0 = time.perf_counter()
    if kind == "subproc":
        env = SubprocVecEnv(factories, start_method="forkserver")
    else:
        env = DummyVecEnv(factories)
    env.seed(seed)
    env.reset()
    startup_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    state = {"dones": 0}

    def step() -> tuple[float, int]:
        a = random_actions(rng, n_envs)
        t0 = time.perf_counter()
        _, _, dones, _ = env.step(a)
        elapsed = time.perf_counter() - t0
        state["dones"] += int(dones.sum())
        return elapsed, n_envs

    res = timed_rounds(step, seconds, repeats, warmup_s)
    res["episodes_ended"] = state["dones"]  # includes the warm-up
    res["startup_s"] = startup_s
    env.close()
    return res


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench_env.py",
        description=(
            "Throughput of RacingEnv, RacingVecEnv and SB3 Dummy/SubprocVecEnv; prints a "
            "table and writes every figure to a JSON file."
        ),
    )
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run of seconds")
    add_output_args(p, NAME)
    p.add_argument("--cars", type=int, nargs="+", default=[1, 16, 64, 256], help="RacingVecEnv N")
    p.add_argument(
        "--vec-actions",
        nargs="+",
        choices=["expert", "random"],
        default=["expert", "random"],
        help="action sources for RacingVecEnv (expert: expert + noise; random: as for SB3)",
    )
    p.add_argument("--noise", type=float, default=0.1, help="std of the noise on expert actions")
    p.add_argument("--sb3-envs", type=int, default=2, help="envs in DummyVecEnv/SubprocVecEnv")
    p.add_argument("--seconds", type=float, default=None, help="timed seconds per measurement")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per measurement")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per measurement")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = 0.2 if args.quick else 4.0
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.warmup is None:
        args.warmup = 0.05 if args.quick else 0.5
    if args.seconds <= 0 or args.repeats < 1 or args.warmup < 0:
        p.error("--seconds must be > 0, --repeats >= 1 and --warmup >= 0")
    if min(args.cars) < 1 or args.sb3_envs < 1:
        p.error(f"--cars and --sb3-envs must be >= 1, got {args.cars} and {args.sb3_envs}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    t_run = time.perf_counter()
    budget = (args.seconds, args.repeats, args.warmup, args.seed)

    results: dict[str, Any] = {}
    print(f"single RacingEnv ({args.seconds:g} s) ...", file=sys.stderr)
    results["single"] = bench_single(*budget)
    for kind in ("dummy", "subproc"):
        print(f"SB3 {kind} x{args.sb3_envs} ...", file=sys.stderr)
        results[kind] = bench_sb3(kind, args.sb3_envs, *budget)
    vec: dict[str, dict[str, Any]] = {}
    for actions_kind in args.vec_actions:
        vec[actions_kind] = {}
        for n in args.cars:
            print(f"RacingVecEnv N={n} ({actions_kind}) ...", file=sys.stderr)
            vec[actions_kind][str(n)] = bench_racing_vec(n, actions_kind, args.noise, *budget)
    results["racing_vec"] = vec

    # Ratios: every figure is from this run.
    single = results["single"]["rate_median"]
    subproc = results["subproc"]["rate_median"]
    ratios: dict[str, Any] = {
        "dummy_vs_single": results["dummy"]["rate_median"] / single,
        "subproc_vs_single": subproc / single,
        "racing_vec_vs_subproc": {
            k: {n: r["rate_median"] / subproc for n, r in per_n.items()} for k, per_n in vec.items()
        },
    }
    best = {}
    for k, per_n in vec.items():
        n_best = max(per_n, key=lambda n: per_n[n]["rate_median"])
        best[k] = {
            "cars": int(n_best),
            "car_steps_per_s": per_n[n_best]["rate_median"],
            "ratio_vs_subproc": per_n[n_best]["rate_median"] / subproc,
        }
    ratios["best_vs_subproc"] = best
    ratios["target"] = TARGET_RATIO
    ratios["meets_target"] = {k: b["ratio_vs_subproc"] >= TARGET_RATIO for k, b in best.items()}

    # Table.
    rows = [
        ["RacingEnv (single)", "1", "random", f"{single:,.0f}", f"{single / subproc:.2f}x"],
        [
            f"DummyVecEnv({args.sb3_envs})",
            str(args.sb3_envs),
            "random",
            f"{results['dummy']['rate_median']:,.0f}",
            f"{ratios['dummy_vs_single'] / ratios['subproc_vs_single']:.2f}x",
        ],
        [
            f"SubprocVecEnv({args.sb3_envs})",
            str(args.sb3_envs),
            "random",
            f"{subproc:,.0f}",
            "1.00x",
        ],
    ]
    for k, per_n in vec.items():
        label = f"expert+N(0,{args.noise:g})" if k == "expert" else "random"
        for n, r in per_n.items():
            rows.append(
                [
                    "RacingVecEnv",
                    n,
                    label,
                    f"{r['rate_median']:,.0f}",
                    f"{r['rate_median'] / subproc:.2f}x",
                ]
            )
    print()
    print_table(["env", "N", "actions", "steps/s (median)", "vs Subproc"], rows)
    print()
    for k, b in best.items():
        ok = "meets" if ratios["meets_target"][k] else "MISSES"
        print(
            f"best RacingVecEnv ({k} actions): N={b['cars']}, "
            f"{b['ratio_vs_subproc']:.1f}x SubprocVecEnv({args.sb3_envs}) "
            f"-- {ok} the {TARGET_RATIO:g}x target"
        )
    if "expert" in vec:
        for n, r in vec["expert"].items():
            print(
                f"  expert N={n}: {r['expert_ms_per_call']:.3f} ms/call, "
                f"{r['car_steps_per_s_incl_expert']:,.0f} car-steps/s incl. expert, "
                f"{r['episodes_ended']} episodes ended ({r['episodes_off_track']} off track)"
            )

    record = {
        "benchmark": NAME,
        "command": [sys.executable, *sys.argv] if argv is None else ["bench_env.py", *argv],
        "timestamp_utc": started,
        "wall_s": time.perf_counter() - t_run,
        "machine": machine_info(),
        "settings": {
            "quick": args.quick,
            "seconds": args.seconds,
            "repeats": args.repeats,
            "warmup_s": args.warmup,
            "seed": args.seed,
            "cars": args.cars,
            "sb3_envs": args.sb3_envs,
            "subproc_start_method": "forkserver",
            "random_actions": "steer ~ U[-1,1], throttle ~ U[0,1]",
            "vec_actions": {
                "expert": f"Expert().act(vec) + N(0, {args.noise:g}) noise, clipped; "
                "expert time outside the timer",
                "random": "random_actions, as for the SB3 baselines",
            },
            "timed_region": "env.step only (includes auto-reset / reset on done)",
            "rate": "median over repeats of items / timed seconds",
        },
        "units": {
            "single": "env-steps/s",
            "dummy": "env-steps/s summed over envs",
            "subproc": "env-steps/s summed over envs",
            "racing_vec": "car-steps/s",
        },
        "results": results,
        "ratios": ratios,
    }
    save_record(args, NAME, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
