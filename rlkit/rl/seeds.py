"""``train_rl.py --seeds 0 1 2 3 4``: one run per seed in parallel processes, then their
aggregate.

Layout of ``--output OUT``::

    OUT/seed_<s>/            a complete train_rl.py run with --seed s (its own RunDir, lock,
                             checkpoints, eval.json, learning curve); --video goes to the
                             first seed
    OUT/logs/seed_<s>.yml    the options of that run (passed to it with --config)
    OUT/logs/seed_<s>.log    its output; its progress lines are also printed here, prefixed
    OUT/aggregate.json       per metric: mean, IQM, median, 95 % bootstrap CI, every seed's value
    OUT/aggregate.md         the same as a table
    OUT/learning_curves.png  validation return of every seed, with the mean and its 95 % CI

Each seed runs as ``python -m rlkit.cli.train_rl --config OUT/logs/seed_<s>.yml`` with one
torch thread, at most ``--parallel`` at once (default: one per core, as many as memory
allows), in its own process group that dies with this one (:mod:`rlkit.children`).
Every seed evaluates on the same validation and test tracks (``--track-seed``), so the seeds,
BC and the expert are compared on the same tracks. A killed multi-seed run continues with
``--resume``: finished seeds are left as they are, the others resume from their checkpoints.
A seed that fails stops the aggregate, naming the seed, its exit code and its log; the other
seeds run to their end and are kept.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rlkit.aggregate import summarize
from rlkit.children import PassSignals, start_child
from rlkit.cluster import ClusterInfo, ray_session
from rlkit.config import run_config_files
from rlkit.envs.sim import RacingConfig
from rlkit.report import format_aggregate_table, format_eval_table, write_seed_curves_png
from rlkit.rl.config import RLConfig
from rlkit.rundir import RunDir, say
from rlkit.tools import TOOLS
from rlkit.utils import (
    RESULT_FILE,
    available_cores,
    from_json,
    write_json_atomic,
    write_text_atomic,
)

__all__ = ["SeedRunError", "SeedsResult", "plan_parallel", "train_seeds"]

PROG = TOOLS["rl"].script

#: Memory of one PPO/SAC run besides its replay buffer (torch, SB3, the env): measured
#: ~0.35 GiB resident; the estimate leaves room.
RUN_BASE_BYTES = 768 * 2**20


class SeedRunError(RuntimeError):
    """A seed's run failed; the finished seeds are kept."""


@dataclass
class SeedsResult:
    output: Path
    seeds: list[int]
    parallel: int
    wall_s: float
    aggregate: dict[str, Any] = field(default_factory=dict)
    cluster: dict[str, Any] | None = None  # --executor ray: the ClusterInfo


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed_{seed}"


def _mem_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_bytes(cfg: RLConfig) -> int:
    """Estimated memory of one run: the base, plus the replay buffer off-policy (float32
    observation, next observation, action, reward, done, timeout per transition)."""
    if cfg.algo == "ppo":
        return RUN_BASE_BYTES
    per = 4 * (2 * RacingConfig().obs_dim + 2 + 3)
    return RUN_BASE_BYTES + cfg.buffer_size * per


def plan_parallel(cfg: RLConfig, available: int | None = None) -> int:
    """How many seeds run at once: ``--parallel``, else one per core, within memory.

    Raises:
        ValueError: ``--parallel`` runs (or even one) would not fit in the available memory.
    """
    assert cfg.seeds is not None
    n = len(cfg.seeds)
    available = _mem_available() if available is None else available
    need = run_bytes(cfg)
    fit = n if available is None else available // need
    gib = 2**30
    if cfg.parallel is not None:
        if min(cfg.parallel, n) > fit:
            raise ValueError(
                f"--parallel {cfg.parallel}: {min(cfg.parallel, n)} runs at once need "
                f"~{min(cfg.parallel, n) * need / gib:.1f} GiB, {available / gib:.1f} GiB is "
                f"available; pass --parallel {max(fit, 1)} or less"
            )
        return min(cfg.parallel, n)
    if fit < 1:
        raise ValueError(
            f"one {cfg.algo.upper()} run needs ~{need / gib:.1f} GiB, {available / gib:.1f} GiB "
            "is available; lower --buffer-size or free memory"
        )
    return max(1, min(n, available_cores(), fit))


# ------------------------------------------------------------------ running the seeds
def train_seeds(cfg: RLConfig, *, argv: list[str] | None = None) -> SeedsResult:
    """Train one run per seed of ``cfg.seeds`` and aggregate them (see the module docstring)."""
    assert cfg.seeds is not None
    parallel = plan_parallel(cfg) if cfg.executor == "local" else 0  # before anything is written
    run = RunDir(
        cfg.output,
        "rl_seeds",
        resume=cfg.resume,
        overwrite=cfg.overwrite,
        has_checkpoint=lambda p: any(p.glob("seed_*")),
    )
    with run:
        done = run.start(cfg, section="rl", argv=argv)
        if done is not None:
            return from_json(SeedsResult, done)
        t0 = time.perf_counter()
        nodes: dict[int, str] = {}
        cluster = None
        if cfg.executor == "ray":
            with ray_session(cfg.ray_address, cfg.parallel) as cluster:
                parallel = min(len(cfg.seeds), cluster.cpus)
                say(
                    f"{PROG}: {len(cfg.seeds)} seeds ({', '.join(map(str, cfg.seeds))}) as Ray "
                    f"tasks on {cluster.describe()}; logs in {run.path / 'logs'}"
                )
                codes, nodes = _run_ray(cfg, run, cluster)
        else:
            say(
                f"{PROG}: {len(cfg.seeds)} seeds ({', '.join(map(str, cfg.seeds))}), "
                f"{parallel} at once, one torch thread each; logs in {run.path / 'logs'}"
            )
            codes = _run_local(cfg, run, parallel)
        failed = {s: c for s, c in codes.items() if c != 0}
        if failed:
            kept = [s for s in cfg.seeds if s not in failed]
            lines = [
                f"seed {s} failed (exit code {c}); its log: {run.path / 'logs' / f'seed_{s}.log'}"
                for s, c in failed.items()
            ]
            raise SeedRunError(
                "; ".join(lines) + f". Finished seeds kept: {kept or 'none'}; fix the cause, "
                f"then: {run.resume_command}"
            )
        aggregate = aggregate_seeds(run.path, cfg.seeds)
        if cluster is not None:
            aggregate["ray"] = {**dataclasses.asdict(cluster), "node_of_seed": nodes}
        result = SeedsResult(run.path, list(cfg.seeds), parallel, time.perf_counter() - t0)
        result.aggregate = aggregate
        result.cluster = dataclasses.asdict(cluster) if cluster else None
        write_json_atomic(run.path / "aggregate.json", aggregate)
        write_text_atomic(run.path / "aggregate.md", aggregate_markdown(aggregate))
        write_seed_curves_png(
            run.path / "learning_curves.png",
            {s: seed_dir(run.path, s) / "learning_curve.csv" for s in cfg.seeds},
            aggregate.get("validation_expert_return"),
        )
        complete = all(_result(seed_dir(run.path, s)).get("complete") for s in cfg.seeds)
        run.finish(result, summary_text(result), complete=complete)
        return result


def _seed_config(cfg: RLConfig, out: Path, seed: int, first: bool) -> RLConfig:
    """The options of one seed's run (``--resume`` is passed when its folder holds a run)."""
    return dataclasses.replace(
        cfg.for_seed(seed),
        output=str(seed_dir(out, seed)),
        threads=1,
        resume=False,
        overwrite=False,
        video=cfg.video if first else None,
    )


def _run_local(cfg: RLConfig, run: RunDir, parallel: int) -> dict[int, int]:
    """Run the seeds as child processes, ``parallel`` at once; their exit codes."""
    assert cfg.seeds is not None
    logs = run.path / "logs"
    logs.mkdir(exist_ok=True)
    pending = list(cfg.seeds)
    running: dict[int, tuple[Any, IO[bytes], _Tail]] = {}
    codes: dict[int, int] = {}
    notice = f"{PROG}: stopping the seed runs (each saves a checkpoint; Ctrl-C again kills them)"
    with PassSignals(notice) as signals:
        try:
            while pending or running:
                while pending and len(running) < parallel and not signals.received:
                    seed = pending.pop(0)
                    running[seed] = _start_seed(cfg, run.path, seed, seed == cfg.seeds[0])
                    signals.started(running[seed][0].pid)
                for seed, (proc, log, tail) in list(running.items()):
                    tail.show()
                    if proc.poll() is not None:
                        tail.show()
                        log.close()
                        signals.finished(proc.pid)
                        codes[seed] = proc.returncode
                        del running[seed]
                if signals.received and not running:
                    break
                time.sleep(0.2)
        finally:
            for proc, log, _ in running.values():  # an error here: do not leave them behind
                proc.kill()
                proc.wait()
                log.close()
        _note_saved(cfg, run)
        if signals.received:
            sig = signals.received[0]
            if sig == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + sig)
    return codes


def _run_ray(cfg: RLConfig, run: RunDir, cluster: ClusterInfo) -> tuple[dict[int, int], dict]:
    """Run the seeds as Ray tasks (:mod:`rlkit.rl.seeds_ray`); exit codes and node ids."""
    from rlkit.rl.seeds_ray import run_seeds_on_ray

    assert cfg.seeds is not None
    try:
        return run_seeds_on_ray(
            cfg,
            run.path,
            lambda s: _seed_config(cfg, run.path, s, s == cfg.seeds[0]),
            cluster,
        )
    finally:
        _note_saved(cfg, run)


def _note_saved(cfg: RLConfig, run: RunDir) -> None:
    """What an interruption leaves, for its message: the finished seeds, the others' checkpoints."""
    assert cfg.seeds is not None
    finished = sum(1 for s in cfg.seeds if _result(seed_dir(run.path, s)).get("complete"))
    run.saved = f"{finished} of {len(cfg.seeds)} seeds finished, the others checkpointed"


def _start_seed(cfg: RLConfig, out: Path, seed: int, first: bool) -> tuple[Any, IO[bytes], _Tail]:
    config_file = out / "logs" / f"seed_{seed}.yml"
    one = _seed_config(cfg, out, seed, first)
    write_text_atomic(config_file, run_config_files(one, section="rl")["config.resolved.yml"])
    cmd = [sys.executable, "-m", TOOLS["rl"].module, "--config", str(config_file)]
    folder = seed_dir(out, seed)
    if folder.is_dir() and any(folder.iterdir()):
        cmd.append("--resume")
    log_path = out / "logs" / f"seed_{seed}.log"
    log = open(log_path, "ab", buffering=0)  # noqa: SIM115 (closed when the run ends)
    log.write(f"$ {' '.join(cmd)}\n".encode())
    tail = _Tail(log_path, f"seed {seed} | ")
    return start_child(cmd, log), log, tail


class _Tail:
    """Print the complete new lines of a seed's log, prefixed (its progress lines)."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.path, self.prefix = path, prefix
        self.offset = path.stat().st_size if path.is_file() else 0
        self.partial = b""

    def show(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            text = line.decode(errors="replace").rstrip("\r")
            if text.strip():
                print(self.prefix + text.split("\r")[-1], flush=True)


# ------------------------------------------------------------------ the aggregate
def _result(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return {}


def time_to_expert(curve: Path, expert: dict[str, Any]) -> float | None:
    """Wall seconds (training and evaluation) until a validation evaluation completed as
    many laps as the expert on the same tracks, with a mean lap time at most the expert's;
    None if none did."""
    if not curve.is_file() or expert.get("mean_lap_time") is None:
        return None
    for row in csv.DictReader(curve.open()):
        laps, lap_time = float(row["lap_rate"]), row["lap_time"]
        if lap_time and laps >= expert["lap_rate"] and float(lap_time) <= expert["mean_lap_time"]:
            return float(row["wall_s"])
    return None


#: (metric, its statistic for the CI, how the table shows it)
METRICS: tuple[tuple[str, str, str], ...] = (
    ("rl_final.mean_return", "mean", "final policy: return"),
    ("rl_final.lap_rate", "mean", "final policy: laps completed"),
    ("rl_final.crash_rate", "mean", "final policy: left the track"),
    ("rl_final.lap_time_vs_expert", "mean", "final policy: lap time / expert's"),
    ("rl_selected.mean_return", "mean", "selected policy: return"),
    ("rl_selected.lap_time_vs_expert", "mean", "selected policy: lap time / expert's"),
    ("final_vs_selected_return", "mean", "final return / selected return"),
    ("time_to_expert_lap_s", "median", "time to the expert's lap time (s)"),
    ("steps_per_s", "mean", "env-steps/s"),
)


def seed_figures(folder: Path) -> dict[str, float | None]:
    """One seed's figures of :data:`METRICS` from its ``eval.json`` and learning curve."""
    ev = json.loads((folder / "eval.json").read_text())
    expert = ev["expert"]
    out: dict[str, float | None] = {}
    for name in ("rl_final", "rl_selected"):
        row = ev.get(name) or ev["rl_final"]
        for key in ("mean_return", "lap_rate", "crash_rate"):
            out[f"{name}.{key}"] = row[key]
        lap, ref = row["mean_lap_time"], expert["mean_lap_time"]
        out[f"{name}.lap_time_vs_expert"] = None if lap is None or not ref else lap / ref
    sel = (ev.get("rl_selected") or ev["rl_final"])["mean_return"]
    out["final_vs_selected_return"] = ev["rl_final"]["mean_return"] / sel if sel else None
    out["time_to_expert_lap_s"] = time_to_expert(
        folder / "learning_curve.csv", ev["validation"]["expert"]
    )
    out["steps_per_s"] = _result(folder).get("steps_per_s")
    return out


def aggregate_seeds(out: Path, seeds: list[int]) -> dict[str, Any]:
    """``aggregate.json``: per metric the mean, IQM, median and 95 % bootstrap CI across
    ``seeds``, and every seed's figures; BC and the expert on the same test tracks."""
    per_seed = {s: seed_figures(seed_dir(out, s)) for s in seeds}
    first = json.loads((seed_dir(out, seeds[0]) / "eval.json").read_text())
    metrics = {}
    for name, stat, _ in METRICS:
        values = [per_seed[s][name] for s in seeds]
        if name != "time_to_expert_lap_s" and any(v is None for v in values):
            continue  # e.g. no lap completed: no lap time to compare
        metrics[name] = summarize(values, stat)
    return {
        "seeds": seeds,
        "test_episodes": first["episodes"],
        "track_seed": first["seed"],
        "metrics": metrics,
        "per_seed": per_seed,
        "reference": {k: first[k] for k in ("expert", "bc") if k in first},
        "validation_expert_return": first["validation"]["expert"]["mean_return"],
    }


def aggregate_markdown(agg: dict[str, Any]) -> str:
    labels = {name: label for name, _, label in METRICS}
    n = len(agg["seeds"])
    head = (
        f"{n} seeds ({', '.join(map(str, agg['seeds']))}) on the same "
        f"{agg['test_episodes']} test tracks (never used for training or selection); "
        "mean, interquartile mean and 95 % bootstrap CI across seeds (median for times).\n\n"
    )
    table = format_aggregate_table({labels[k]: v for k, v in agg["metrics"].items()}, markdown=True)
    ref = format_eval_table(agg["reference"], markdown=True)
    return f"{head}{table}\n\nOn the same test tracks:\n\n{ref}\n"


def summary_text(result: SeedsResult) -> str:
    labels = {name: label for name, _, label in METRICS}
    agg = result.aggregate
    return "\n".join(
        [
            f"  output          {result.output}  (one folder per seed)",
            f"  seeds           {', '.join(map(str, result.seeds))}  "
            f"({result.parallel} at once, {result.wall_s:.1f} s)",
            *(
                [f"  executor        Ray: {c['nodes']} node(s), {c['cpus']} CPUs"]
                if (c := result.cluster)
                else []
            ),
            f"  test tracks     {agg.get('test_episodes')}  (the same for every seed)",
            "",
            format_aggregate_table({labels[k]: v for k, v in agg.get("metrics", {}).items()}),
        ]
    )
