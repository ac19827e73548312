"""The pipeline's stages and plan: which tool runs in which folder with which flags, the
flags after ``--`` routed to the stages that have them, the worker counts, and every stage's
settings checked before the first one starts."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkit.config import ConfigError, build_parser, parse_config
from rlkit.pipeline.options import MAX_CORES, MAX_WORKERS, WORKER_VARS
from rlkit.rundir import RunInUseError, RunLock
from rlkit.tools import TOOLS
from rlkit.utils import WORKER_RULES, available_cores, default_workers, write_json_atomic

STATE_FILE = "pipeline.json"
PROG = "train_optimized.sh"


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
          ("--timesteps", "60000", "--eval-every", "20000", "--eval-episodes", "10",
           "--test-episodes", "10")),
    Stage("world_model", "world_model", "--resume",
          ("--iterations", "2", "--train-steps", "20", "--seed-episodes", "2",
           "--eval-every", "2", "--eval-episodes", "1")),
)  # fmt: skip

#: Flags the pipeline sets itself to chain the stages; passing them after -- is an error.
CHAIN_FLAGS = (
    "--output", "--data", "--init-from", "--init_from", "--demos", "--resume", "--overwrite",
)  # fmt: skip


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
    seeds: int | None = None  # --seeds N: the RL stage trains seeds 0 .. N-1
    executor: str = "local"  # ray: collection chunks and RL seeds are Ray tasks

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


def _count(text: str, name: str, high: int) -> int:
    """``text`` as an integer in [1, high]; ``name`` (a flag or variable) names it in errors."""
    try:
        n = int(text)
    except ValueError:
        raise PipelineError(f"{name} must be an integer, got {text!r}") from None
    if not 1 <= n <= high:
        raise PipelineError(f"{name} must be in [1, {high}], got {n}")
    return n


def resolve_cores(flag: int | None, env: dict[str, str]) -> int:
    """The core count: ``--cores`` > ``RLKIT_CORES`` > the cores this process may use."""
    if flag is not None:  # checked by PipelineOptions
        return flag
    if env.get("RLKIT_CORES", "").strip():
        return _count(env["RLKIT_CORES"].strip(), "RLKIT_CORES", MAX_CORES)
    return available_cores()


def derive_workers(
    cores: int, flags: dict[str, int | None], env: dict[str, str]
) -> tuple[dict[str, int], dict[str, str]]:
    """Worker counts: flag > environment variable > the seeds' formula on ``cores``.

    Raises:
        PipelineError: a variable that is not an integer in [1, MAX_WORKERS], naming it.
    """
    counts, sources = {}, {}
    for key, var in WORKER_VARS.items():
        if flags.get(key) is not None:  # checked by PipelineOptions
            counts[key], sources[key] = flags[key], "flag"
        elif env.get(var, "").strip():
            counts[key], sources[key] = _count(env[var].strip(), var, MAX_WORKERS), var
        else:
            counts[key], sources[key] = default_workers(key, cores), WORKER_RULES[key][0]
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
        args = ["--output", out, "--overwrite"]
        if plan.executor == "ray":  # the cluster's CPUs (a local instance: all cores)
            args += ["--executor", "ray"]
        else:
            args += ["--workers", str(plan.workers["collect"])]
    elif stage.name == "bc":
        args = ["--data", str(run / "demos"), "--output", out]
        args += ["--workers", str(plan.workers["bc"])]
    elif stage.name == "rl":
        args = ["--init-from", str(run / "bc"), "--output", out, "--video", str(run / "lap.gif")]
        args += ["--demos", str(run / "demos")]  # SAC/TD3: replay buffer and BC loss
        if plan.worker_sources["rl"] != WORKER_RULES["rl"][0] or _rl_vec(routed) != "batched":
            # subprocess envs follow the seeds' formula; the batched env's car count is its own
            args += ["--envs", str(plan.workers["rl"])]
        if plan.seeds:
            args += ["--seeds", *map(str, range(plan.seeds))]
            if plan.executor == "ray":
                args += ["--executor", "ray"]
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


#: where --executor ray sends the work, as the header says it
RAY_WHERE = "RAY_ADDRESS, else a Ray instance here"


def parallelism(plan: Plan, routed: dict[str, list[str]]) -> list[str]:
    """What runs in parallel in each stage that runs, as the header prints it: only the
    worker counts a stage will use (the BC loader workers only where a DataLoader is used,
    the RL envs as they are vectorised, the seeds run at once)."""
    names = {s.name for s in plan.stage_list}
    by_name = {s.name: s for s in STAGES}

    def settings(name: str) -> Any:
        return parse_stage(by_name[name], stage_argv(plan, by_name[name], routed[name], True))

    lines = []
    if "collect" in names:
        n, src = plan.workers["collect"], plan.worker_sources["collect"]
        if plan.executor == "ray":
            lines.append(f"collection           Ray tasks, one per chunk ({RAY_WHERE})")
        else:
            lines.append(f"collection workers   {n:>3}  ({src})")
    if "bc" in names:
        bc, n, src = settings("bc"), plan.workers["bc"], plan.worker_sources["bc"]
        if bc.loader == "memory":
            lines.append("BC data              whole dataset as tensors (no loader workers)")
        elif bc.loader == "dataloader":
            lines.append(f"BC loader workers    {n:>3}  ({src})")
        else:
            lines.append(
                f"BC data              as tensors if it fits in memory, else {n} DataLoader "
                f"workers ({src})"
            )
    if "rl" in names:
        from rlkit.rl.seeds import plan_parallel

        rl = settings("rl")
        how = {
            "batched": "batched cars in one process",
            "subproc": f"subprocess envs ({plan.worker_sources['rl']})",
            "dummy": f"envs in one process ({plan.worker_sources['rl']})",
        }[rl.vec]
        lines.append(f"RL envs              {rl.num_envs:>3}  {how}")
        if rl.seeds and rl.executor == "ray":
            n = len(rl.seeds)
            lines.append(f"RL seeds             {n:>3}  (Ray tasks, one CPU each; {RAY_WHERE})")
        elif rl.seeds:
            lines.append(
                f"RL seeds             {len(rl.seeds):>3}  ({plan_parallel(rl)} at once, one "
                "torch thread each)"
            )
    return lines


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
