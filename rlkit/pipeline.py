"""The whole pipeline in one command, timed: collect -> BC -> RL (-> world model).

``train_optimized.sh`` detects the cores with ``nproc`` and runs ``python -m rlkit.pipeline``.
Each stage is a tool of this rlkit (``python -m rlkit.cli.<tool>``), run as a child process
whose output goes to the terminal and to ``RUN/logs/<stage>.log``; each reads the previous
stage's output in the run folder::

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

Nothing lost, nothing silent:

- every stage's settings (config.yml and the flags after ``--``) are checked before the first
  stage starts, also on ``--resume``: a bad key or value stops the run with exit code 2;
- the run folder is locked (``RUN/.rlkit.lock``) while a pipeline process writes it;
- a stage runs in its own process group and dies with the pipeline: the kernel kills it when
  the pipeline process dies, even by SIGKILL (Linux: ``PR_SET_PDEATHSIG``); SIGTERM and
  SIGHUP are passed on to the stage's group, Ctrl-Z stops and ``fg`` continues it too;
- Ctrl-C reaches the stage exactly once (the stage saves what it can and exits), then the
  pipeline prints one line and exits with code 130; a second Ctrl-C kills the stage.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
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
from rlkit.rundir import RunInUseError, RunLock
from rlkit.tools import TOOLS
from rlkit.utils import (
    RESULT_FILE,
    available_cores,
    default_workers,
    json_ready,
    write_json_atomic,
    write_text_atomic,
)

STATE_FILE = "pipeline.json"
PROG = "train_optimized.sh"

#: Bounds of --cores / RLKIT_CORES and of every worker count: catch typos (-4, 0, 40000).
MAX_CORES = 4096
MAX_WORKERS = 4096


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: a tool of :data:`rlkit.tools.TOOLS` and its output folder.

    ``name`` is the tool's config section. The stage runs as ``python -m <module>`` (not the
    root script by path), so an installed rlkit runs its own tools wherever it is started;
    ``script`` is the root script's name, shown to the user.
    """

    name: str
    output: str  # folder inside the run
    resume_flag: str | None  # flag that continues an interrupted run of this tool
    quick: tuple[str, ...] = ()  # extra flags of the --quick preset

    @property
    def script(self) -> str:
        return TOOLS[self.name].script

    @property
    def module(self) -> str:
        return TOOLS[self.name].module

    def options_class(self) -> type:
        return TOOLS[self.name].options_class()


STAGES: tuple[Stage, ...] = (
    Stage("collect", "demos", None, ("--episodes", "20")),
    Stage("bc", "bc", "--resume", ("--epochs", "10", "--eval-episodes", "10")),
    Stage("rl", "rl", "--resume",
          ("--timesteps", "60000", "--eval-every", "20000", "--eval-episodes", "10")),
    Stage("world_model", "world_model", "--resume",
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
    options = {s.name: build_parser(s.options_class())._option_string_actions for s in stages}
    routed: dict[str, list[str]] = {s.name: [] for s in stages}
    for group in groups:
        flag = group[0].split("=", 1)[0]
        if flag in ("-h", "--help"):
            raise PipelineError(
                f"{flag} after -- would reach every stage; see a stage's own help with "
                "python -m rlkit.cli.train_bc --help (or any root script's --help)"
            )
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

_WORKER_KEYS = {  # key -> (default_workers kind, env variable, flag, formula shown to the user)
    "collect": ("collect", "RLKIT_COLLECT_WORKERS", "--collect-workers", "cores - 1, min 1, cap 12"),  # noqa: E501
    "bc": ("bc", "RLKIT_BC_WORKERS", "--bc-workers", "cores / 2, min 1, cap 8"),
    "rl": ("rl", "RLKIT_RL_ENVS", "--rl-envs", "cores - 1, min 2, cap 8"),
}  # fmt: skip


def _count(text: str, name: str, high: int) -> int:
    """``text`` as an integer in [1, high]; ``name`` (a flag or variable) names it in errors."""
    try:
        n = int(text)
    except ValueError:
        raise PipelineError(f"{name} must be an integer, got {text!r}") from None
    if not 1 <= n <= high:
        raise PipelineError(f"{name} must be between 1 and {high}, got {n}")
    return n


def resolve_cores(flag: int | None, env: dict[str, str]) -> int:
    """The core count: ``--cores`` > ``RLKIT_CORES`` > the cores this process may use."""
    if flag is not None:
        return _count(str(flag), "--cores", MAX_CORES)
    if env.get("RLKIT_CORES", "").strip():
        return _count(env["RLKIT_CORES"].strip(), "RLKIT_CORES", MAX_CORES)
    return available_cores()


def derive_workers(
    cores: int, flags: dict[str, int | None], env: dict[str, str]
) -> tuple[dict[str, int], dict[str, str]]:
    """Worker counts: flag > environment variable > the seeds' formula on ``cores``.

    Raises:
        PipelineError: a count that is not an integer in [1, MAX_WORKERS], naming its flag
            or variable.
    """
    counts, sources = {}, {}
    for key, (kind, var, flag, formula) in _WORKER_KEYS.items():
        if flags.get(key) is not None:
            counts[key], sources[key] = _count(str(flags[key]), flag, MAX_WORKERS), "flag"
        elif env.get(var, "").strip():
            counts[key], sources[key] = _count(env[var].strip(), var, MAX_WORKERS), var
        else:
            counts[key], sources[key] = default_workers(kind, cores), formula
    return counts, sources


# --------------------------------------------------------------------------------------------
# Running the stages
# --------------------------------------------------------------------------------------------


def stage_argv(plan: Plan, stage: Stage, routed: list[str], resume: bool) -> list[str]:
    """The arguments of one stage's tool (after its name).

    Raises:
        ConfigError: the RL settings cannot be read (the RL env count depends on ``--vec``).
    """
    run = plan.run_dir
    out = str(run / stage.output)
    if stage.name == "collect":
        args = ["--output", out, "--workers", str(plan.workers["collect"]), "--overwrite"]
    elif stage.name == "bc":
        args = ["--data", str(run / "demos"), "--output", out]
        args += ["--workers", str(plan.workers["bc"])]
    elif stage.name == "rl":
        args = ["--init-from", str(run / "bc"), "--output", out, "--video", str(run / "lap.gif")]
        if plan.worker_sources["rl"] != _WORKER_KEYS["rl"][3] or _rl_vec(routed) != "batched":
            # subprocess envs follow the seeds' formula; the batched env's car count is its own
            args += ["--envs", str(plan.workers["rl"])]
    else:  # world model: its own pixel episodes, then its run folder
        args = [str(run / "world_model_episodes"), out]
    if resume and stage.resume_flag and (run / stage.output).exists():
        args.append(stage.resume_flag)
    if plan.quick:
        args += list(stage.quick)
    return args + routed


def parse_stage(stage: Stage, args: list[str]) -> Any:
    """The stage's settings as its tool will read them: its config.yml section and ``args``.

    Raises:
        ConfigError: a bad config.yml key or value, or a bad flag value (argparse's message).
    """
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parse_config(stage.options_class(), stage.name, args, prog=stage.script)
    except SystemExit as e:  # argparse: a bad flag value (its message went to ``err``)
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        raise ConfigError(lines[-1] if lines else f"bad arguments {args}") from e


def _rl_vec(routed: list[str]) -> str:
    rl = next(s for s in STAGES if s.name == "rl")
    return parse_stage(rl, routed).vec


def check_stages(plan: Plan, routed: dict[str, list[str]]) -> None:
    """Read every stage's settings that will run, before the first one starts.

    A typo in a late stage's section of config.yml (or a bad value after ``--``) must not
    cost the earlier stages' work; on ``--resume`` the settings may have changed since.

    Raises:
        PipelineError: (exit code 2) naming the stage and the problem.
    """
    for stage in plan.stage_list:
        if plan.stages.get(stage.name, {}).get("status") == "done":
            continue  # skipped: its settings no longer matter
        try:
            # resume=True: a stage after the first one gets its resume flag whenever its
            # output exists (see run_pipeline), so this is the argv it will run with
            parse_stage(stage, stage_argv(plan, stage, routed[stage.name], resume=True))
        except ConfigError as e:
            raise PipelineError(
                f"stage '{stage.name}' ({stage.script}) settings: {e}; nothing was run"
            ) from None


# --------------------------------------------------------------------------------------------
# Stage processes: they die with the pipeline and see each signal once
# --------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _libc_prctl() -> Any:
    """libc's ``prctl`` on Linux (looked up before the fork), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _child_setup(parent: int, prctl: Any) -> None:
    """Runs in the stage's process between fork and exec.

    Its own process group: the terminal's Ctrl-C reaches the pipeline only, which passes it
    on exactly once (a second SIGINT would hit the stage while it saves). And the kernel
    sends it SIGKILL when the pipeline dies, whatever killed the pipeline.
    """
    os.setpgid(0, 0)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the pipeline died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)


class _StageSignals:
    """While a stage runs: pass SIGINT/SIGTERM/SIGHUP on to its process group, once each.

    The second Ctrl-C kills the group (a stage that does not stop must not hold the user);
    Ctrl-Z stops the stage's group with the pipeline and ``fg`` continues both.
    """

    PASSED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.pgid: int | None = None  # the stage's process group (= its pid) once started
        self.received: list[int] = []
        self._old: dict[int, Any] = {}

    def _send(self, sig: int) -> None:
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if signum == signal.SIGINT and self.received.count(signal.SIGINT) == 1:
            print(f"\n{PROG}: stopping stage '{self.stage}' (Ctrl-C again kills it)",
                  file=sys.stderr, flush=True)  # fmt: skip
        elif signum == signal.SIGINT:
            self._send(signal.SIGKILL)
            return
        self._send(signum)

    def _on_stop(self, signum: int, frame: object) -> None:
        self._send(signal.SIGTSTP)
        os.kill(os.getpid(), signal.SIGSTOP)  # stops here until SIGCONT (fg)
        self._send(signal.SIGCONT)

    def started(self, pid: int) -> None:
        self.pgid = pid
        for sig in dict.fromkeys(self.received):  # arrived while the stage was starting
            self._send(sig)

    def __enter__(self) -> _StageSignals:
        for sig in self.PASSED:
            self._old[sig] = signal.signal(sig, self._on_signal)
        self._old[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._on_stop)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _run_logged(cmd: list[str], log: Path, stage: str) -> tuple[int, int | None]:
    """Run ``cmd`` with its output shown and saved to ``log``.

    Returns:
        The exit code and the first signal the pipeline received meanwhile (None: none).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    prctl, parent = _libc_prctl(), os.getpid()
    # unbuffered: a killed pipeline must not lose the tail of the log
    with open(log, "ab", buffering=0) as f, _StageSignals(stage) as signals:
        f.write(f"$ {' '.join(cmd)}\n".encode())
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,  # its own process group may not read the terminal
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _child_setup(parent, prctl),
        )
        signals.started(proc.pid)
        assert proc.stdout is not None
        echo = True
        # until every writer is gone: the stage and anything it started that kept its stdout
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
            if echo:
                try:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                except OSError:  # the terminal went away (SIGHUP): keep logging
                    echo = False
            f.write(chunk)
        code = proc.wait()
    return code, (signals.received[0] if signals.received else None)


def open_run(run_dir: Path) -> RunLock:
    """Create ``run_dir`` if needed and lock it for this process.

    Raises:
        PipelineError: another process holds it (naming that process) or it cannot be made.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return RunLock(run_dir).acquire()
    except RunInUseError as e:
        raise PipelineError(str(e)) from None
    except OSError as e:
        raise PipelineError(f"cannot use the run folder {run_dir}: {e}") from None


def run_pipeline(plan: Plan, resume: bool) -> dict[str, Any]:
    """Run every unfinished stage in order; returns the summary (also written to the run).

    The caller holds the run folder's lock (:func:`open_run`).
    """
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
        cmd = [sys.executable, "-m", stage.module, *args]
        log = plan.run_dir / "logs" / f"{stage.name}.log"
        print(f"\n== {stage.name}: {stage.script} {' '.join(args)}", flush=True)
        resumed = state.get("status") in ("running", "interrupted", "failed")
        plan.stages[stage.name] = {"status": "running", "log": str(log), "resumed": resumed}
        plan.save()
        t0 = time.perf_counter()
        code, sig = _run_logged(cmd, log, stage.name)
        wall = time.perf_counter() - t0
        if code == 0:
            plan.stages[stage.name].update(status="done", wall_s=wall)
        elif sig is not None:
            plan.stages[stage.name].update(status="interrupted", exit_code=code, wall_s=wall)
        else:
            plan.stages[stage.name].update(status="failed", exit_code=code, wall_s=wall)
        plan.save()
        if sig is not None:
            name = signal.Signals(sig).name
            what = "interrupted" if sig == signal.SIGINT else f"stopped by {name}"
            when = "after" if code == 0 else "during"
            raise PipelineError(
                f"{what} {when} stage '{stage.name}'; resume with "
                f"./train_optimized.sh --resume {plan.run_dir}",
                code=128 + sig,
            )
        if code != 0:
            raise PipelineError(
                f"stage '{stage.name}' failed (exit code {code}); its log: {log}\n"
                f"fix the cause, then: ./train_optimized.sh --resume {plan.run_dir}",
                code=1,
            )
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
--quick = 20 episodes, 10 epochs, 60k timesteps (35 s measured on 2 cores; see README.md).
run folder: locked while a pipeline writes it; stages die with the pipeline; Ctrl-C stops the
running stage (it saves what it can), then --resume RUN_DIR continues."""


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes: ~35 s on 2 cores")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--output", metavar="RUN_DIR", help="run folder (default: runs/<timestamp>)")
    p.add_argument("--with-world-model", action="store_true", help="also run train_world_model.py")
    p.add_argument(
        "--cores", type=int, help=f"core count, 1 to {MAX_CORES} (default: RLKIT_CORES, else nproc)"
    )
    p.add_argument("--collect-workers", type=int, help=f"collection processes (1 to {MAX_WORKERS})")
    p.add_argument("--bc-workers", type=int, help=f"BC DataLoader workers (1 to {MAX_WORKERS})")
    p.add_argument("--rl-envs", type=int, help=f"RL subprocess envs (1 to {MAX_WORKERS})")
    return p


def _plan_from_args(args: argparse.Namespace, passthrough: list[str]) -> Plan:
    """A new run's plan from the command line (nothing is written yet)."""
    cores = resolve_cores(args.cores, dict(os.environ))
    workers, sources = derive_workers(
        cores,
        {"collect": args.collect_workers, "bc": args.bc_workers, "rl": args.rl_envs},
        dict(os.environ),
    )
    if args.output:
        run_dir = Path(args.output)
    else:
        run_dir = Path("runs").resolve() / time.strftime("%Y%m%d-%H%M%S")
    if (run_dir / STATE_FILE).exists():
        raise PipelineError(
            f"{run_dir} already holds a run; --resume {run_dir} continues it, "
            "or choose another --output"
        )
    return Plan(run_dir, cores, workers, sources, args.quick, args.with_world_model, passthrough)


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    if "--" in args_in:
        cut = args_in.index("--")
        own, passthrough = args_in[:cut], args_in[cut + 1 :]
    else:
        own, passthrough = args_in, []
    args = build_arg_parser().parse_args(own)
    lock: RunLock | None = None
    plan: Plan | None = None
    try:
        if args.resume:
            counts = (args.collect_workers, args.bc_workers, args.rl_envs)
            flags = (args.quick, args.output, args.with_world_model, passthrough)
            if any(flags) or any(n is not None for n in counts):
                raise PipelineError(
                    "--resume repeats the run's own settings (saved in pipeline.json); "
                    "pass only --resume RUN_DIR"
                )
            resolve_cores(args.cores, dict(os.environ))  # a bad RLKIT_CORES is an error anyway
            run_dir = Path(args.resume)
            if (run_dir / STATE_FILE).is_file():
                lock = open_run(run_dir)  # before reading: another process may be writing it
            plan = Plan.load(run_dir)
        else:
            plan = _plan_from_args(args, passthrough)
        # every stage's settings, before the first stage starts (also on --resume)
        check_stages(plan, route_passthrough(plan.passthrough, plan.stage_list))
        if lock is None:
            lock = open_run(plan.run_dir)
            if (plan.run_dir / STATE_FILE).exists():  # made since the check above
                raise PipelineError(
                    f"{plan.run_dir} already holds a run; --resume {plan.run_dir} continues it"
                )
        print(f"cores: {plan.cores}")
        for key, label in (("collect", "collection workers"), ("bc", "BC loader workers"),
                           ("rl", "RL subprocess envs")):  # fmt: skip
            print(f"  {label:<20} {plan.workers[key]:>3}  ({plan.worker_sources[key]})")
        print(f"run folder: {plan.run_dir}", flush=True)
        run_pipeline(plan, resume=bool(args.resume))
    except PipelineError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:  # Ctrl-C outside a stage (between stages, at the summary)
        if lock is not None and plan is not None and (plan.run_dir / STATE_FILE).is_file():
            hint = f"; resume with ./train_optimized.sh --resume {plan.run_dir}"
        else:
            hint = "; nothing was started"
        print(f"\n{PROG}: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        if lock is not None:
            lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
