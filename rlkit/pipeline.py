"""The whole pipeline in one command, timed: collect -> BC -> RL (-> world model).

``train_optimized.sh`` detects the cores with ``nproc`` and runs ``python -m rlkit.pipeline``.
Each stage is its own root script, run as a child process whose output goes to the terminal
and to ``RUN/logs/<stage>.log``; each reads the previous stage's output in the run folder::

    RUN/demos/          collect_demonstrations.py   (LeRobot dataset)
    RUN/bc/             train_bc.py --data RUN/demos
    RUN/rl/             train_rl.py --init-from RUN/bc   (+ RUN/lap.gif, RUN/learning_curve.png)
    RUN/world_model/    train_world_model.py RUN/world_model_episodes RUN/world_model
                        (with --with-world-model; pixel episodes of its own env)
    RUN/pipeline.json   settings and the state of every stage (what --resume reads)
    RUN/summary.json    measured wall time, throughput and result of every stage
    RUN/summary.md      the same as tables

Settings come from ``config.yml`` as for every tool; the pipeline only sets the folders, the
worker counts and (``--quick``) small sizes. Flags after ``--`` go to every stage that has
them (``-- --seed 3 --epochs 20 --algo sac``). ``--resume RUN`` skips finished stages and
resumes the interrupted one with its own ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkit.config import ConfigError, build_parser, parse_config
from rlkit.utils import (
    RESULT_FILE,
    default_workers,
    json_ready,
    write_json_atomic,
    write_text_atomic,
)

ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = "pipeline.json"


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: a root script, its config section and its output folder."""

    name: str
    script: str
    config: str  # "module:Dataclass"
    output: str  # folder inside the run
    resume_flag: str | None  # flag that continues an interrupted run of this tool
    quick: tuple[str, ...] = ()  # extra flags of the --quick preset


STAGES: tuple[Stage, ...] = (
    Stage("collect", "collect_demonstrations.py", "rlkit.collect:CollectConfig", "demos", None,
          ("--episodes", "20")),
    Stage("bc", "train_bc.py", "rlkit.bc:BCConfig", "bc", "--resume",
          ("--epochs", "10", "--eval-episodes", "10")),
    Stage("rl", "train_rl.py", "rlkit.rl:RLConfig", "rl", "--resume",
          ("--timesteps", "60000", "--eval-every", "20000", "--eval-episodes", "10")),
    Stage("world_model", "train_world_model.py", "rlkit.planet.train:WorldModelConfig",
          "world_model", "--resume",
          ("--iterations", "2", "--train-steps", "20", "--seed-episodes", "2",
           "--eval-every", "2", "--eval-episodes", "1")),
)  # fmt: skip

#: Flags the pipeline sets itself to chain the stages; passing them after -- is an error.
CHAIN_FLAGS = ("--output", "--data", "--init-from", "--init_from", "--resume", "--overwrite")


class PipelineError(Exception):
    """A bad pipeline argument or run folder (exit code 2) or a failed stage (exit code 1)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _config_class(stage: Stage) -> type:
    import importlib

    module, _, name = stage.config.partition(":")
    return getattr(importlib.import_module(module), name)


def route_passthrough(args: list[str], stages: list[Stage]) -> dict[str, list[str]]:
    """Send each flag after ``--`` (with its values) to every stage whose tool has it.

    Raises:
        PipelineError: a flag no stage has, a value without a flag, or a chaining flag.
    """
    groups: list[list[str]] = []
    for tok in args:
        if tok.startswith("--"):
            groups.append([tok])
        elif not groups:
            raise PipelineError(f"'{tok}' after -- is not a flag; write e.g. -- --epochs 20")
        else:
            groups[-1].append(tok)
    options = {s.name: build_parser(_config_class(s))._option_string_actions for s in stages}
    routed: dict[str, list[str]] = {s.name: [] for s in stages}
    for group in groups:
        flag = group[0].split("=", 1)[0]
        if flag in CHAIN_FLAGS:
            raise PipelineError(f"{flag} is set by the pipeline to chain the stages; drop it")
        takers = [name for name, opts in options.items() if flag in opts]
        if not takers:
            raise PipelineError(
                f"{flag} after -- is not a flag of any stage ({', '.join(options)}); "
                "see each script's --help"
            )
        for name in takers:
            routed[name].extend(group)
    return routed


@dataclass
class Plan:
    """Everything a run needs; saved in ``pipeline.json`` so ``--resume`` repeats it."""

    run_dir: Path
    cores: int
    workers: dict[str, int]
    worker_sources: dict[str, str]
    quick: bool
    with_world_model: bool
    passthrough: list[str]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def stage_list(self) -> list[Stage]:
        return [s for s in STAGES if s.name != "world_model" or self.with_world_model]

    def save(self) -> None:
        write_json_atomic(self.run_dir / STATE_FILE, self)

    @classmethod
    def load(cls, run_dir: Path) -> Plan:
        path = run_dir / STATE_FILE
        if not path.is_file():
            raise PipelineError(
                f"--resume {run_dir}: no {STATE_FILE} there; pass a folder made by "
                "train_optimized.sh (runs/<timestamp>)"
            )
        try:
            d = json.loads(path.read_text())
            d["run_dir"] = run_dir
            return cls(**d)
        except (ValueError, TypeError) as e:
            raise PipelineError(f"{path}: not a pipeline state file ({e}); start a new run") from e


# --------------------------------------------------------------------------------------------
# Worker counts
# --------------------------------------------------------------------------------------------

_WORKER_KEYS = {  # key -> (default_workers kind, env variable, formula shown to the user)
    "collect": ("collect", "RLKIT_COLLECT_WORKERS", "cores - 1, min 1, cap 12"),
    "bc": ("bc", "RLKIT_BC_WORKERS", "cores / 2, min 1, cap 8"),
    "rl": ("rl", "RLKIT_RL_ENVS", "cores - 1, min 2, cap 8"),
}


def derive_workers(
    cores: int, flags: dict[str, int | None], env: dict[str, str]
) -> tuple[dict[str, int], dict[str, str]]:
    """Worker counts: flag > environment variable > the seeds' formula on ``cores``."""
    counts, sources = {}, {}
    for key, (kind, var, formula) in _WORKER_KEYS.items():
        if flags.get(key) is not None:
            counts[key], sources[key] = int(flags[key]), "flag"  # type: ignore[arg-type]
        elif env.get(var):
            try:
                counts[key] = int(env[var])
            except ValueError:
                raise PipelineError(f"{var}={env[var]!r} is not an integer; unset it") from None
            sources[key] = var
        else:
            counts[key], sources[key] = default_workers(kind, cores), formula
        if counts[key] < 1:
            raise PipelineError(f"{key} workers must be >= 1, got {counts[key]}")
    return counts, sources


# --------------------------------------------------------------------------------------------
# Running the stages
# --------------------------------------------------------------------------------------------


def stage_argv(plan: Plan, stage: Stage, routed: list[str], resume: bool) -> list[str]:
    """The arguments of one stage's script (after the script name)."""
    run = plan.run_dir
    out = str(run / stage.output)
    if stage.name == "collect":
        args = ["--output", out, "--workers", str(plan.workers["collect"]), "--overwrite"]
    elif stage.name == "bc":
        args = ["--data", str(run / "demos"), "--output", out]
        args += ["--workers", str(plan.workers["bc"])]
    elif stage.name == "rl":
        args = ["--init-from", str(run / "bc"), "--output", out, "--video", str(run / "lap.gif")]
        if plan.worker_sources["rl"] != _WORKER_KEYS["rl"][2] or _rl_vec(routed) != "batched":
            # subprocess envs follow the seeds' formula; the batched env's car count is its own
            args += ["--envs", str(plan.workers["rl"])]
    else:  # world model: its own pixel episodes, then its run folder
        args = [str(run / "world_model_episodes"), out]
    if resume and stage.resume_flag and (run / stage.output).exists():
        args.append(stage.resume_flag)
    if plan.quick:
        args += list(stage.quick)
    return args + routed


def _rl_vec(routed: list[str]) -> str:
    from rlkit.rl import RLConfig

    try:
        return parse_config(RLConfig, "rl", routed).vec
    except ConfigError as e:
        raise PipelineError(f"rl settings: {e}") from e


def _run_logged(cmd: list[str], log: Path) -> int:
    """Run ``cmd`` with its output shown and saved to ``log``; returns its exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        f.write(f"$ {' '.join(cmd)}\n".encode())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        try:
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                f.write(chunk)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
        return proc.wait()


def run_pipeline(plan: Plan, resume: bool) -> dict[str, Any]:
    """Run every unfinished stage in order; returns the summary (also written to the run)."""
    stages = plan.stage_list
    routed = route_passthrough(plan.passthrough, stages)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.save()
    for stage in stages:
        state = plan.stages.get(stage.name, {})
        if state.get("status") == "done":
            print(f"\n== {stage.name}: done in an earlier run ({state['wall_s']:.1f} s), skipped")
            continue
        args = stage_argv(plan, stage, routed[stage.name], resume)
        cmd = [sys.executable, str(ROOT / stage.script), *args]
        log = plan.run_dir / "logs" / f"{stage.name}.log"
        print(f"\n== {stage.name}: {stage.script} {' '.join(args)}", flush=True)
        resumed = state.get("status") in ("running", "interrupted", "failed")
        plan.stages[stage.name] = {"status": "running", "log": str(log), "resumed": resumed}
        plan.save()
        t0 = time.perf_counter()
        try:
            code = _run_logged(cmd, log)
        except KeyboardInterrupt:
            plan.stages[stage.name]["status"] = "interrupted"
            plan.save()
            raise PipelineError(
                f"interrupted during stage '{stage.name}'; resume with "
                f"./train_optimized.sh --resume {plan.run_dir}",
                code=130,
            ) from None
        wall = time.perf_counter() - t0
        if code != 0:
            plan.stages[stage.name].update(status="failed", exit_code=code, wall_s=wall)
            plan.save()
            raise PipelineError(
                f"stage '{stage.name}' failed (exit code {code}); its log: {log}\n"
                f"fix the cause, then: ./train_optimized.sh --resume {plan.run_dir}",
                code=1,
            )
        plan.stages[stage.name].update(status="done", wall_s=wall)
        plan.save()
        resume = True  # a later stage may hold output of an interrupted earlier attempt
    curve = plan.run_dir / "rl" / "learning_curve.png"
    if curve.is_file():
        shutil.copyfile(curve, plan.run_dir / "learning_curve.png")
    summary = build_summary(plan)
    write_json_atomic(plan.run_dir / "summary.json", summary)
    md = summary_markdown(summary)
    write_text_atomic(plan.run_dir / "summary.md", md)
    print("\n" + md)
    return summary


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def _read_result(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _stage_figures(name: str, r: dict[str, Any]) -> tuple[str, str]:
    """(throughput, result) text of one stage from its result.json."""
    if not r:
        return "-", "-"
    if name == "collect":
        fps = r["frames"] / r["wall_s"] if r.get("wall_s") else float("nan")
        return (
            f"{r['episodes_per_s']:.1f} episodes/s ({fps:,.0f} frames/s)",
            f"{r['episodes']} episodes, {r['frames']:,} frames, {100 * r['lap_rate']:.0f} % lapped",
        )
    if name == "bc":
        return (
            f"{r['samples_per_s']:,.0f} samples/s ({r['loader']}, {r['device']})",
            f"{r['epochs_run']} epochs, best val loss {r['best_val_loss']:.4f}",
        )
    if name == "rl":
        return f"{r['steps_per_s']:,.0f} env-steps/s", f"{r['timesteps']:,} env steps"
    if name == "world_model":
        ret = "-" if r["eval_return"] is None else f"{r['eval_return']:.0f}"
        rnd = "-" if r["random_return"] is None else f"{r['random_return']:.0f}"
        return (
            f"{r['batches_per_s']:.2f} train steps/s ({r['device']})",
            f"{r['iterations']} iterations, {r['episodes']} episodes, "
            f"planner return {ret} (random {rnd})",
        )
    return "-", "-"


def build_summary(plan: Plan) -> dict[str, Any]:
    rows = []
    for stage in plan.stage_list:
        state = plan.stages.get(stage.name, {})
        result = _read_result(plan.run_dir / stage.output)
        throughput, text = _stage_figures(stage.name, result)
        rows.append(
            {
                "stage": stage.name,
                "status": state.get("status", "not run"),
                "wall_s": state.get("wall_s"),
                "resumed": bool(state.get("resumed")),  # wall_s then covers the last attempt
                "throughput": throughput,
                "result": text,
                "log": state.get("log"),
                "details": result,
            }
        )
    rl = _read_result(plan.run_dir / "rl").get("eval") or {}
    if not rl:  # no RL stage finished: the BC evaluation, if any
        rl = _read_result(plan.run_dir / "bc").get("eval") or {}
    return json_ready(
        {
            "run_dir": plan.run_dir,
            "cores": plan.cores,
            "workers": plan.workers,
            "worker_sources": plan.worker_sources,
            "preset": "quick" if plan.quick else "default",
            "passthrough": plan.passthrough,
            "stages": rows,
            "total_wall_s": sum(r["wall_s"] or 0.0 for r in rows),
            "evaluation": rl,
            "files": {
                name: str(plan.run_dir / name)
                for name in ("learning_curve.png", "lap.gif")
                if (plan.run_dir / name).is_file()
            },
        }
    )


def _fmt(v: Any, spec: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def summary_markdown(s: dict[str, Any]) -> str:
    lines = [
        f"# rlkit run {Path(s['run_dir']).name}",
        "",
        f"{s['cores']} cores; workers: collection {s['workers']['collect']}, BC loader "
        f"{s['workers']['bc']}, RL envs {s['workers']['rl']}; preset {s['preset']}.",
        "",
        "| stage | wall time | throughput | result |",
        "|---|---:|---|---|",
    ]
    for r in s["stages"]:
        wall = _fmt(r["wall_s"], ".1f", " s") if r["status"] == "done" else r["status"]
        wall += " (resumed: last attempt)" if r["resumed"] else ""
        lines.append(f"| {r['stage']} | {wall} | {r['throughput']} | {r['result']} |")
    lines.append(f"| **total** | **{s['total_wall_s']:.1f} s** | | |")
    ev = s["evaluation"]
    if ev:
        n = next(iter(ev.values()))["episodes"]
        lines += [
            "",
            f"Policies on the same {n} held-out tracks:",
            "",
            "| policy | mean return | laps completed | mean lap time | left the track |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in ("expert", "bc", "rl"):
            if name in ev:
                e = ev[name]
                lines.append(
                    f"| {name} | {_fmt(e['mean_return'], '.1f')} | "
                    f"{_fmt(100 * e['lap_rate'], '.0f', ' %')} | "
                    f"{_fmt(e['mean_lap_time'], '.2f', ' s')} | "
                    f"{_fmt(100 * e['crash_rate'], '.0f', ' %')} |"
                )
    if s["files"]:
        lines += ["", "Files: " + ", ".join(Path(p).name for p in s["files"].values())]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

DESCRIPTION = """\
Run the whole rlkit pipeline -- collect_demonstrations.py -> train_bc.py -> train_rl.py
(-> train_world_model.py) -- in one run folder, with worker counts derived from the cores,
and print the measured wall time, throughput and result of every stage."""

EPILOG = """\
worker counts: flag > environment variable (RLKIT_COLLECT_WORKERS, RLKIT_BC_WORKERS,
RLKIT_RL_ENVS) > the seeds' formulas on the core count (RLKIT_CORES or nproc).
settings: config.yml, as for every tool; flags after -- go to every stage that has them,
e.g.  ./train_optimized.sh -- --seed 3 --epochs 20 --algo sac
presets: default = config.yml sizes (the seeds' 100 episodes, 50 epochs, 500k timesteps);
--quick = 20 episodes, 10 epochs, 60k timesteps (about 2 minutes on 2 cores)."""


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_optimized.sh",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes: about 2 minutes")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--output", metavar="RUN_DIR", help="run folder (default: runs/<timestamp>)")
    p.add_argument("--with-world-model", action="store_true", help="also run train_world_model.py")
    p.add_argument("--cores", type=int, help="core count (train_optimized.sh passes nproc)")
    p.add_argument("--collect-workers", type=int, help="collection processes")
    p.add_argument("--bc-workers", type=int, help="BC DataLoader workers")
    p.add_argument("--rl-envs", type=int, help="RL subprocess envs")
    return p


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    if "--" in args_in:
        cut = args_in.index("--")
        own, passthrough = args_in[:cut], args_in[cut + 1 :]
    else:
        own, passthrough = args_in, []
    args = build_arg_parser().parse_args(own)
    try:
        if args.resume:
            if passthrough or args.quick or args.output or args.with_world_model:
                raise PipelineError(
                    "--resume repeats the run's own settings (saved in pipeline.json); "
                    "pass only --resume RUN_DIR"
                )
            plan = Plan.load(Path(args.resume))
        else:
            cores = args.cores or int(os.environ.get("RLKIT_CORES") or os.cpu_count() or 1)
            workers, sources = derive_workers(
                cores,
                {"collect": args.collect_workers, "bc": args.bc_workers, "rl": args.rl_envs},
                dict(os.environ),
            )
            run_dir = Path(args.output or ROOT / "runs" / time.strftime("%Y%m%d-%H%M%S"))
            if (run_dir / STATE_FILE).exists():
                raise PipelineError(
                    f"{run_dir} already holds a run; --resume {run_dir} continues it, "
                    "or choose another --output"
                )
            plan = Plan(
                run_dir, cores, workers, sources, args.quick, args.with_world_model, passthrough
            )
            route_passthrough(passthrough, plan.stage_list)  # fail before any work
        if plan.with_world_model and not (ROOT / "train_world_model.py").is_file():
            raise PipelineError("--with-world-model: train_world_model.py is not available yet")
        print(f"cores: {plan.cores}")
        for key, label in (("collect", "collection workers"), ("bc", "BC loader workers"),
                           ("rl", "RL subprocess envs")):  # fmt: skip
            print(f"  {label:<20} {plan.workers[key]:>3}  ({plan.worker_sources[key]})")
        print(f"run folder: {plan.run_dir}")
        run_pipeline(plan, resume=bool(args.resume))
    except PipelineError as e:
        print(f"train_optimized.sh: error: {e}", file=sys.stderr)
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
