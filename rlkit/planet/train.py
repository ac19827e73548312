"""The online PlaNet loop: seed episodes, then train / collect / evaluate / checkpoint.

::

    seed: random-policy episodes until data_dir holds --seed-episodes valid ones
          (existing episodes count; nothing is re-collected)
    for iteration in [resumed iteration, --iterations):
        refresh the dataset (only files written since the last refresh are loaded)
        --train-steps gradient steps on batches (B = --batch-size, L = --seq-len)
        collect --collect-episodes with the CEM planner + Gaussian exploration noise
        every --eval-every iterations: --eval-episodes without noise, and a PNG of
            real vs open-loop predicted frames
        every --checkpoint-every iterations: checkpoint (atomic, the newest
            --keep-checkpoints kept)

Output folder::

    output_dir/
    ├── config.resolved.yml, command.txt
    ├── checkpoints/ckpt_000010.pt   model, optimiser, iteration, train step, RNG states
    ├── metrics.csv                  one row per iteration (losses, returns, timings)
    ├── result.json                  the printed summary, machine-readable
    ├── openloop_000010.png          at each evaluation: real (top) vs predicted rows
    └── tb/                          TensorBoard events (if tensorboard is installed)

A restarted run resumes from the newest readable checkpoint automatically. Everything is
written under a temporary name and renamed into place, and rows of ``metrics.csv`` /
TensorBoard after the checkpoint are dropped on resume, so a SIGKILL at any moment loses at
most one checkpoint interval. Episodes collected after the checkpoint stay in ``data_dir``.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from rlkit.planet.dataset import EpisodeDataset, batch_to_device, keep_batch, obs_to_model
from rlkit.planet.envs import IMAGE_SIZE, PixelEnv, make_pixel_env
from rlkit.planet.model import PRESETS, ModelSizes, WorldModel
from rlkit.planet.planner import CEMPlanner, PlannerConfig
from rlkit.planet.storage import EPISODE_RE, EpisodeStorage
from rlkit.rundir import RunDir, RunLock, clean_stale_temps, say
from rlkit.utils import (
    atomic_path,
    check_ranges,
    episode_seed,
    from_json,
    idle_cores,
    resolve_device,
    torch_save_atomic,
    trim_csv,
)

__all__ = ["WorldModelConfig", "WorldModelResult", "train_world_model", "summary_text"]

logger = logging.getLogger(__name__)

#: ``--action-repeat`` when unset, per env (PlaNet also picks it per task).
DEFAULT_ACTION_REPEAT: dict[str, int] = {"pendulum": 4, "racing": 2}

#: Training and planning sizes per preset (model widths are in ``model.PRESETS``). The cpu
#: preset keeps a B=16 x L=32 step near a second on 2 cores (bench/bench_world_model.py).
RUN_PRESETS: dict[str, dict[str, int]] = {
    "cpu": {"batch_size": 16, "seq_len": 32, "candidates": 300, "top_k": 30, "cem_iterations": 5},
    "paper": {
        "batch_size": 50,
        "seq_len": 50,
        "candidates": 1000,
        "top_k": 100,
        "cem_iterations": 10,
    },
}

METRICS = [
    "iteration",
    "train_step",
    "episodes",
    "env_steps",
    "loss",
    "obs_loss",
    "reward_loss",
    "kl",
    "train_return",
    "eval_return",
    "train_s",
    "collect_s",
    "batches_per_s",
]


@dataclass
class WorldModelConfig:
    """Options of ``train_world_model.py`` (section ``world_model`` of config.yml)."""

    data_dir: str = field(
        default="data/world_episodes",
        metadata={"positional": True, "help": "episode folder (created; existing episodes reused)"},
    )
    output_dir: str = field(
        default="runs/world_model",
        metadata={"positional": True, "help": "run folder (an existing run there is resumed)"},
    )
    env: Literal["pendulum", "racing"] = field(
        default="pendulum", metadata={"help": "pixel environment (64x64x3 frames)"}
    )
    action_repeat: int | None = field(
        default=None,
        metadata={"help": "env steps per action (default: per env, pendulum 4 / racing 2)"},
    )
    max_episode_steps: int | None = field(
        default=None, metadata={"help": "env steps before truncation (default: the env's)"}
    )
    pixel_render: Literal["native", "gym"] = field(
        default="native",
        metadata={"help": "pendulum frames: numpy at 64 px, or gymnasium's pygame 500 px shrunk"},
    )
    seed_episodes: int = field(
        default=5, metadata={"help": "random-policy episodes the data must hold before training"}
    )
    iterations: int = field(default=100, metadata={"help": "training iterations"})
    train_steps: int = field(default=100, metadata={"help": "gradient steps per iteration"})
    collect_episodes: int = field(
        default=1, metadata={"help": "planner episodes collected per iteration"}
    )
    preset: Literal["auto", "cpu", "paper"] = field(
        default="auto", metadata={"help": "sizes (auto: paper with CUDA, cpu without)"}
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "sequences per batch (default: preset, cpu 16 / paper 50)"}
    )
    seq_len: int | None = field(
        default=None, metadata={"help": "actions per sequence (default: preset, cpu 32 / paper 50)"}
    )
    cnn_depth: int | None = field(
        default=None, metadata={"help": "conv channels d-2d-4d-8d (default: preset, 16 / 32)"}
    )
    deter_size: int | None = field(
        default=None, metadata={"help": "GRU state size (default: preset, 100 / 200)"}
    )
    stoch_size: int | None = field(
        default=None, metadata={"help": "stochastic state size (default: preset, 16 / 30)"}
    )
    hidden_size: int | None = field(
        default=None, metadata={"help": "hidden layer width (default: preset, 100 / 200)"}
    )
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    grad_clip: float = field(default=1000.0, metadata={"help": "gradient norm clip"})
    free_nats: float = field(default=3.0, metadata={"help": "KL free nats"})
    plan_horizon: int = field(default=12, metadata={"help": "CEM planning horizon"})
    candidates: int | None = field(
        default=None, metadata={"help": "CEM candidates (default: preset, 300 / 1000)"}
    )
    top_k: int | None = field(
        default=None, metadata={"help": "CEM elite sequences (default: preset, 30 / 100)"}
    )
    cem_iterations: int | None = field(
        default=None, metadata={"help": "CEM iterations (default: preset, 5 / 10)"}
    )
    explore_noise: float = field(
        default=0.3, metadata={"help": "std of Gaussian action noise while collecting"}
    )
    eval_every: int = field(default=10, metadata={"help": "evaluate every K iterations (0: never)"})
    eval_episodes: int = field(default=1, metadata={"help": "episodes per evaluation"})
    checkpoint_every: int = field(default=1, metadata={"help": "checkpoint every N iterations"})
    keep_checkpoints: int = field(default=3, metadata={"help": "newest checkpoints kept"})
    loading_workers: int = field(
        default=4,
        metadata={
            "aliases": ["world_loading_workers"],
            "help": "threads that discover, validate and load episode files",
        },
    )
    parallel_loading: bool = field(
        default=True, metadata={"help": "load episodes with a thread pool (--no-parallel-loading)"}
    )
    num_workers: int = field(
        default=0, metadata={"help": "DataLoader worker processes (0: batches built in-process)"}
    )
    preload_images: bool = field(
        default=False, metadata={"help": "hold frames in RAM pre-converted to --preload-dtype"}
    )
    preload_dtype: Literal["float16", "float32", "uint8"] = field(
        default="uint8", metadata={"help": "dtype of preloaded frames"}
    )
    cache_images: bool = field(
        default=False,
        metadata={"help": "lazy mode: read episodes on demand into an LRU cache (large data)"},
    )
    cache_size: float = field(default=2048.0, metadata={"help": "LRU cache bound, MB"})
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata={"help": "training device"}
    )
    threads: int | None = field(
        default=None,
        metadata={
            "help": "torch CPU threads for training (default: the idle cores -- all cores "
            "minus the load average, min 1; planning always uses 1; see bench_world_model.py)"
        },
    )
    seed: int = field(default=0, metadata={"help": "run seed (episodes, init, batches)"})
    max_minutes: float | None = field(
        default=None,
        metadata={
            "help": "wall-time budget: the run stops at the first gradient step, episode or "
            "evaluation past it (even inside an iteration) and saves a checkpoint"
        },
    )
    tensorboard: bool = field(default=True, metadata={"help": "write TensorBoard events to tb/"})
    resume: bool = field(
        default=True,
        metadata={
            "help": "continue the run in output_dir from its newest checkpoint "
            "(--no-resume: refuse to start where checkpoints exist)"
        },
    )

    def __post_init__(self) -> None:
        if self.action_repeat is None:
            # Pendulum at 4 met the learning goal where 2 did not (see the README).
            self.action_repeat = DEFAULT_ACTION_REPEAT.get(self.env, 2)
        positive = [
            "action_repeat",
            "iterations",
            "train_steps",
            "plan_horizon",
            "checkpoint_every",
            "keep_checkpoints",
            "loading_workers",
        ]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        optional_positive = [
            "max_episode_steps",
            "batch_size",
            "seq_len",
            "cnn_depth",
            "deter_size",
            "stoch_size",
            "hidden_size",
            "candidates",
            "top_k",
            "cem_iterations",
            "threads",
        ]
        for name in optional_positive:
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (or null for the default), got {v}")
        for name in ("seed_episodes", "collect_episodes", "eval_every", "eval_episodes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        checks = [
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (self.free_nats >= 0, f"free_nats must be >= 0, got {self.free_nats}"),
            (self.explore_noise >= 0, f"explore_noise must be >= 0, got {self.explore_noise}"),
            (self.cache_size > 0, f"cache_size must be > 0 MB, got {self.cache_size}"),
            (
                not (self.cache_images and self.preload_images),
                "pass either --preload-images or --cache-images, not both",
            ),
            (
                self.max_minutes is None or self.max_minutes > 0,
                f"max_minutes must be > 0, got {self.max_minutes}",
            ),
            (
                self.pixel_render == "native" or self.env == "pendulum",
                "--pixel-render gym applies to --env pendulum only",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        # upper bounds: a typo (1e20) is an error, not an allocation the kernel kills
        check_ranges(
            self,
            {
                "action_repeat": (1, 1000),
                "max_episode_steps": (1, 1e6),
                "seed_episodes": (0, 1e6),
                "iterations": (1, 1e7),
                "train_steps": (1, 1e7),
                "collect_episodes": (0, 1e4),
                "batch_size": (1, 4096),
                "seq_len": (1, 10_000),
                "cnn_depth": (1, 1024),
                "deter_size": (1, 16384),
                "stoch_size": (1, 4096),
                "hidden_size": (1, 16384),
                "lr": (1e-10, 1),
                "plan_horizon": (1, 1000),
                "candidates": (1, 1e6),
                "cem_iterations": (1, 1000),
                "eval_every": (0, 1e7),
                "eval_episodes": (0, 1e4),
                "keep_checkpoints": (1, 1e4),
                "loading_workers": (1, 256),
                "num_workers": (0, 64),
                "cache_size": (1e-3, 1e8),
                "threads": (1, 1024),
                "seed": (0, 2**32 - 1),
                "max_minutes": (1e-3, 1e6),
            },
        )
        if self.top_k is not None and self.candidates is not None and self.top_k > self.candidates:
            raise ValueError(f"top_k must be <= candidates ({self.candidates}), got {self.top_k}")

    # -- derived values
    def preset_name(self, device: torch.device) -> str:
        if self.preset != "auto":
            return self.preset
        return "paper" if device.type == "cuda" else "cpu"

    def sizes(self, device: torch.device) -> ModelSizes:
        base = PRESETS[self.preset_name(device)]
        return ModelSizes(
            cnn_depth=self.cnn_depth or base.cnn_depth,
            deter=self.deter_size or base.deter,
            stoch=self.stoch_size or base.stoch,
            hidden=self.hidden_size or base.hidden,
        )

    def run_value(self, name: str, device: torch.device) -> int:
        """``batch_size``, ``seq_len``, ``candidates``, ``top_k`` or ``cem_iterations``."""
        value = getattr(self, name)
        return value if value is not None else RUN_PRESETS[self.preset_name(device)][name]

    def planner(self, device: torch.device) -> PlannerConfig:
        return PlannerConfig(
            horizon=self.plan_horizon,
            candidates=self.run_value("candidates", device),
            top_k=min(self.run_value("top_k", device), self.run_value("candidates", device)),
            iterations=self.run_value("cem_iterations", device),
        )

    @property
    def workers(self) -> int:
        """Loading threads actually used (1 with --no-parallel-loading)."""
        return self.loading_workers if self.parallel_loading else 1

    def env_spec(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "action_repeat": self.action_repeat,
            "max_episode_steps": self.max_episode_steps,
            "image_size": IMAGE_SIZE,
        }


@dataclass
class WorldModelResult:
    output: Path
    iterations: int
    train_steps: int
    episodes: int
    env_steps: int
    last_loss: dict[str, float]
    eval_return: float
    random_return: float
    train_seconds: float
    batches_per_s: float
    device: str
    preset: str
    resumed_from: int | None = None
    stopped_early: bool = False


# ---------------------------------------------------------------------- helpers
DISCARDED = "discarded_episodes"


def _set_aside_later_episodes(
    storage: EpisodeStorage, recorded: list[str] | None, out: Path
) -> list[Path]:
    """Move episodes written after the checkpoint (a kill between an episode's write and
    the iteration's checkpoint) to ``out/discarded_episodes``: the resumed run collects
    them again under the same indices and seeds, so it matches an uninterrupted run.
    Nothing is deleted; episodes the checkpoint does not know of with lower indices than
    its newest (added by hand) stay."""
    if not recorded:
        return []
    known = set(recorded)
    newest = max(int(EPISODE_RE.match(n).group(1)) for n in known)  # type: ignore[union-attr]
    later = [p for i, p in storage.indexed() if i > newest and p.name not in known]
    for p in later:
        (out / DISCARDED).mkdir(exist_ok=True)
        os.replace(p, out / DISCARDED / p.name)
    return later


def checkpoints(out: Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    return sorted((out / "checkpoints").glob("ckpt_*.pt"), key=lambda p: int(p.stem[5:]))


def load_newest_checkpoint(out: Path, device: torch.device) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads; unreadable ones are skipped with a warning."""
    for path in reversed(checkpoints(out)):
        try:
            return path, torch.load(path, map_location=device, weights_only=False)
        except Exception as e:  # a foreign or damaged file must not stop the resume
            say(f"warning: skipping the damaged checkpoint {path} ({type(e).__name__}: {e})")
    return None


def _tb_writer(out: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("TensorBoard is not installed (pip install tensorboard); metrics.csv only")
        return None
    return SummaryWriter(str(out / "tb"), purge_step=purge_step)


@contextlib.contextmanager
def planning_threads(device: torch.device) -> Iterator[None]:
    """One torch thread while planning on CPU: CEM runs many small batched ops, which
    bench/bench_world_model.py measured several times slower on 2 threads than on 1."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ---------------------------------------------------------------------- episodes
@dataclass
class Episode:
    obs: list[np.ndarray] = field(default_factory=list)
    action: list[np.ndarray] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    terminal: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)

    @property
    def ret(self) -> float:
        return float(sum(self.reward))

    def save(self, storage: EpisodeStorage) -> Path:
        return storage.add_episode(
            np.stack(self.obs), np.stack(self.action), self.reward, self.terminal, self.truncated
        )


def run_episode(
    env: PixelEnv,
    seed: int,
    model: WorldModel | None = None,
    planner: CEMPlanner | None = None,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Episode:
    """One episode: uniform random actions (no model), or CEM through ``model``'s belief.

    ``noise`` adds N(0, noise^2) to the planned action (collection); 0 for evaluation.
    """
    rng = rng or np.random.default_rng(seed)
    ep = Episode()
    obs = env.reset(seed=seed)
    ep.obs.append(obs)
    device = next(model.parameters()).device if model is not None else None
    state = model.initial_state(1) if model is not None else None
    prev = torch.zeros(1, env.action_dim, device=device) if model is not None else None
    while True:
        if model is None or planner is None:
            a = rng.uniform(-1.0, 1.0, env.action_dim).astype(np.float32)
        else:
            with torch.no_grad():
                embed = model.encoder(obs_to_model(torch.from_numpy(obs).to(device))[None])
                state, _ = model.obs_step(state, prev, embed)
                a = planner.plan(state, device).cpu().numpy()
            if noise > 0:
                a = a + noise * rng.standard_normal(env.action_dim)
            a = np.clip(a, -1.0, 1.0).astype(np.float32)
            prev = torch.from_numpy(a).to(device)[None]
        obs, r, term, trunc = env.step(a)
        ep.obs.append(obs)
        ep.action.append(a)
        ep.reward.append(r)
        ep.terminal.append(term)
        ep.truncated.append(trunc)
        if term or trunc:
            return ep


def make_planner(model: WorldModel, cfg: PlannerConfig, seed: int) -> CEMPlanner:
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return CEMPlanner(
        lambda s, a: model.img_step(s, a),
        lambda s: model.reward(s.features()),
        model.action_dim,
        cfg,
        gen,
    )


def write_openloop_png(
    model: WorldModel, ep: Episode, path: Path, context: int = 5, frames: int = 16
) -> None:
    """Real frames (top row) vs reconstructed-then-open-loop predicted frames (bottom row)."""
    from PIL import Image

    device = next(model.parameters()).device
    n = min(len(ep.action), context + frames - 1)
    obs = torch.from_numpy(np.stack(ep.obs[: n + 1])).to(device)[:, None]
    act = torch.from_numpy(np.stack(ep.action[:n])).to(device)[:, None]
    pred = model.open_loop(obs_to_model(obs), act, min(context, n + 1))  # (n+1, 1, 3, H, W)
    pred = ((pred[:, 0].permute(0, 2, 3, 1) + 0.5) * 255).round().byte().cpu().numpy()
    real = np.stack(ep.obs[: n + 1])
    grid = np.concatenate([np.concatenate(list(real), 1), np.concatenate(list(pred), 1)], 0)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp)


# ---------------------------------------------------------------------- the loop
def train_world_model(
    cfg: WorldModelConfig, *, argv: list[str] | None = None, progress: bool = True
) -> WorldModelResult:
    """Run (or resume) the online PlaNet loop; see the module docstring."""
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    env = make_pixel_env(cfg.env, cfg.action_repeat, cfg.max_episode_steps, cfg.pixel_render)
    run = RunDir(
        cfg.output_dir,
        "world_model",
        resume=cfg.resume,
        has_checkpoint=lambda p: bool(checkpoints(p)),
        resume_flag=None,  # the plain command resumes
    )
    try:
        with run:
            done = run.start(cfg, section="world_model", argv=argv, record=False)
            if done is not None:
                return from_json(WorldModelResult, done)
            storage = EpisodeStorage(cfg.data_dir, workers=cfg.workers)
            # the episodes are part of the run's state (item: identical resume), so one
            # process writes them at a time too
            same = storage.root.resolve() == run.path.resolve()
            with contextlib.nullcontext() if same else RunLock(storage.root):
                for p in clean_stale_temps(storage.root, recursive=False):
                    say(f"removed {p}, left by a killed process")
                storage.check_env(cfg.env_spec(), env.action_dim)
                return _train(cfg, run, storage, env, device, t_start, argv, progress)
    finally:
        env.close()


def _train(
    cfg: WorldModelConfig,
    run: RunDir,
    storage: EpisodeStorage,
    env: PixelEnv,
    device: torch.device,
    t_start: float,
    argv: list[str] | None,
    progress: bool,
) -> WorldModelResult:
    out = run.path
    if device.type == "cpu":
        # The idle cores: on the shared 2-core machine a second thread spinning against
        # other jobs made a train step 11x slower (bench_world_model).
        torch.set_num_threads(cfg.threads or idle_cores())

    # ---- model, optimiser, resume
    sizes, preset = cfg.sizes(device), cfg.preset_name(device)
    batch_size, seq_len = cfg.run_value("batch_size", device), cfg.run_value("seq_len", device)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = WorldModel(env.action_dim, sizes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-4)
    iteration, train_step, resumed_from = 0, 0, None
    found = load_newest_checkpoint(out, device) if run.resuming else None
    if found is not None:
        path, blob = found
        if blob.get("spec") != model.spec() or blob.get("env_spec") != cfg.env_spec():
            raise ValueError(
                f"{path}: checkpoint is for model {blob.get('spec')} on {blob.get('env_spec')}, "
                f"this run builds {model.spec()} on {cfg.env_spec()}; resume with the same "
                "sizes and env, or choose another output_dir"
            )
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        iteration, train_step = blob["iteration"], blob["train_step"]
        torch.set_rng_state(blob["rng"]["torch"])
        if device.type == "cuda" and blob["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(blob["rng"]["cuda"])
        random.setstate(blob["rng"]["python"])
        resumed_from = iteration
        moved = _set_aside_later_episodes(storage, blob.get("episodes"), out)
        run.saved = f"checkpoint at iteration {iteration}"
        note = f"resuming {out} at iteration {iteration} (step {train_step}); "
        note += f"{len(storage.discover())} episodes on disk, no re-collection"
        if moved:
            note += f"; {len(moved)} written after the checkpoint set aside in {out / DISCARDED}"
        say(note)
    elif run.resuming:
        say(f"{out}: no readable checkpoint; starting the run over")
    # written once the checkpoint is known to fit this config (a refused resume keeps the
    # folder's config.resolved.yml)
    run.record_config(cfg, section="world_model", argv=argv)
    metrics_path = out / "metrics.csv"
    trim_csv(metrics_path, lambda r: int(r[0]) < iteration, METRICS)
    # purge the events after the checkpoint's step; that step itself was logged before it
    writer = _tb_writer(out, train_step + 1) if cfg.tensorboard else None

    # ---- seed episodes: top up to --seed-episodes (existing ones count)
    have = len(storage.discover())
    random_returns: list[float] = []
    if have < cfg.seed_episodes:
        for _ in tqdm(
            range(cfg.seed_episodes - have),
            desc="seed episodes",
            unit="ep",
            disable=not progress,
        ):
            index = storage.next_index()
            ep = run_episode(env, episode_seed(cfg.seed, index, "demo"))
            ep.save(storage)
            random_returns.append(ep.ret)
    dataset = EpisodeDataset(
        storage,
        seq_len,
        batch_size,
        cfg.train_steps,
        preload_dtype=cfg.preload_dtype if cfg.preload_images else "uint8",
        cache_mb=cfg.cache_size if cfg.cache_images else None,
        seed=cfg.seed,
    )
    if dataset.num_episodes == 0:
        raise ValueError(
            f"{cfg.data_dir}: no episode has >= seq_len={seq_len} actions; lower --seq-len or "
            "raise --max-episode-steps"
        )
    loader = None
    if cfg.num_workers > 0:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=cfg.num_workers,
            collate_fn=keep_batch,
            pin_memory=device.type == "cuda",
        )
    plan_cfg = cfg.planner(device)

    # ---- iterations
    deadline = t_start + 60 * cfg.max_minutes if cfg.max_minutes is not None else math.inf
    last: dict[str, float] = {}
    eval_return = math.nan
    train_seconds, batches = 0.0, 0
    stopped_early = False
    with metrics_path.open("a", newline="") as mf:  # trim_csv wrote the header
        log = csv.writer(mf)
        bar = tqdm(
            range(iteration, cfg.iterations),
            desc="world model",
            unit="it",
            initial=iteration,
            total=cfg.iterations,
            disable=not progress,
            dynamic_ncols=True,
        )
        for it in bar:
            dataset.refresh()
            dataset.set_iteration(it)
            # -- train
            model.train()
            t0 = time.perf_counter()
            sums: dict[str, float] = {"loss": 0.0, "obs": 0.0, "reward": 0.0, "kl": 0.0}
            batch_iter = iter(loader) if loader is not None else None
            steps = 0
            for k in range(cfg.train_steps):
                if k and time.perf_counter() > deadline:
                    break  # --max-minutes is a hard budget: stop inside the iteration
                if batch_iter is not None:
                    host = next(batch_iter)
                else:
                    host = dataset.sample_batch(first_index=k * batch_size, reuse=True)
                batch = batch_to_device(host, device)
                loss, parts = model.loss(batch, cfg.free_nats)
                if not torch.isfinite(loss):
                    raise ValueError(
                        f"iteration {it}, train step {train_step + 1}: the loss is not finite "
                        f"({loss.item()}); lower --lr (now {cfg.lr}) or --grad-clip; the "
                        f"checkpoint of iteration {iteration} is kept"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                train_step += 1
                steps += 1
                sums["loss"] += loss.item()
                for key, v in parts.items():
                    sums[key] += v
            train_s = time.perf_counter() - t0
            train_seconds += train_s
            batches += steps
            last = {k: v / steps for k, v in sums.items()}

            # -- collect with the planner (+ exploration noise)
            model.eval()
            t1 = time.perf_counter()
            returns, new_steps = [], 0
            with planning_threads(device):
                for _ in range(cfg.collect_episodes):
                    if time.perf_counter() > deadline:
                        break
                    index = storage.next_index()
                    planner = make_planner(model, plan_cfg, episode_seed(cfg.seed, index, "noise"))
                    ep = run_episode(
                        env,
                        episode_seed(cfg.seed, index, "demo"),
                        model,
                        planner,
                        cfg.explore_noise,
                        np.random.default_rng(episode_seed(cfg.seed, index, "noise")),
                    )
                    ep.save(storage)
                    returns.append(ep.ret)
                    new_steps += len(ep.action)
            collect_s = time.perf_counter() - t1

            # -- evaluate (no noise) + open-loop PNG
            done = it + 1
            eval_ret = math.nan
            if (
                time.perf_counter() <= deadline
                and cfg.eval_every
                and cfg.eval_episodes
                and (done % cfg.eval_every == 0 or done == cfg.iterations)
            ):
                # Evaluation draws from its own RNG stream: it must not change what training
                # sees, so a run evaluated at iteration k continues like one that was not.
                devices = [device.index or 0] if device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices), planning_threads(device):
                    eps = []
                    for j in range(cfg.eval_episodes):
                        s = episode_seed(cfg.seed, j, "eval")
                        torch.manual_seed(s)
                        planner = make_planner(model, plan_cfg, s)
                        eps.append(run_episode(env, s, model, planner))
                    write_openloop_png(model, eps[0], out / f"openloop_{done:06d}.png")
                eval_ret = eval_return = float(np.mean([e.ret for e in eps]))

            # -- log
            train_ret = float(np.mean(returns)) if returns else math.nan
            row = {
                "iteration": it,
                "train_step": train_step,
                "episodes": dataset.num_episodes + len(returns),
                "env_steps": dataset.num_steps + new_steps,
                "loss": last["loss"],
                "obs_loss": last["obs"],
                "reward_loss": last["reward"],
                "kl": last["kl"],
                "train_return": train_ret,
                "eval_return": eval_ret,
                "train_s": train_s,
                "collect_s": collect_s,
                "batches_per_s": steps / max(train_s, 1e-9),
            }
            log.writerow(
                [f"{row[k]:.6g}" if isinstance(row[k], float) else row[k] for k in METRICS]
            )
            mf.flush()
            if writer is not None:
                for key in ("loss", "obs_loss", "reward_loss", "kl", "batches_per_s"):
                    writer.add_scalar(f"train/{key}", row[key], train_step)
                if returns:
                    writer.add_scalar("collect/return", train_ret, train_step)
                if not math.isnan(eval_ret):
                    writer.add_scalar("eval/return", eval_ret, train_step)
                writer.flush()
            bar.set_postfix(
                loss=f"{last['loss']:.1f}",
                ret=f"{train_ret:.0f}",
                batches_s=f"{row['batches_per_s']:.2f}",
            )

            # -- checkpoint
            over_time = time.perf_counter() > deadline
            if done % cfg.checkpoint_every == 0 or done == cfg.iterations or over_time:
                save_checkpoint(out, model, opt, done, train_step, cfg, storage)
                iteration = done
                run.saved = f"checkpoint at iteration {done}"
            if over_time:
                stopped_early = True
                logger.warning(
                    "--max-minutes %.1f reached after iteration %d", cfg.max_minutes, done
                )
                break
        bar.close()
    if writer is not None:
        writer.close()
    dataset.refresh()  # count the episodes collected in the last iteration
    result = WorldModelResult(
        output=out,
        iterations=iteration,
        train_steps=train_step,
        episodes=dataset.num_episodes,
        env_steps=dataset.num_steps,
        last_loss=last,
        eval_return=eval_return,
        random_return=float(np.mean(random_returns)) if random_returns else math.nan,
        train_seconds=train_seconds,
        batches_per_s=batches / max(train_seconds, 1e-9),
        device=str(device),
        preset=preset,
        resumed_from=resumed_from,
        stopped_early=stopped_early,
    )
    run.finish(
        result,
        summary_text(result),
        complete=not stopped_early and iteration >= cfg.iterations,
    )
    return result


def save_checkpoint(
    out: Path,
    model: WorldModel,
    opt: torch.optim.Optimizer,
    iteration: int,
    train_step: int,
    cfg: WorldModelConfig,
    storage: EpisodeStorage,
) -> Path:
    """Write ``checkpoints/ckpt_<iteration>.pt`` atomically; keep the newest N.

    The checkpoint lists the episode files that exist now: a resume sets aside those
    written after it, so it continues exactly like the uninterrupted run."""
    folder = out / "checkpoints"
    folder.mkdir(exist_ok=True)
    path = folder / f"ckpt_{iteration:06d}.pt"
    blob = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "iteration": iteration,  # iterations completed
        "train_step": train_step,
        "spec": model.spec(),
        "env_spec": cfg.env_spec(),
        "episodes": [p.name for _, p in storage.indexed()],
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            "python": random.getstate(),
        },
    }
    torch_save_atomic(blob, path)
    for old in checkpoints(out)[: -cfg.keep_checkpoints]:
        old.unlink(missing_ok=True)
    return path


def summary_text(r: WorldModelResult) -> str:
    lines = [
        f"  output          {r.output}",
        f"  iterations      {r.iterations}"
        + (f"  (resumed from {r.resumed_from})" if r.resumed_from is not None else "")
        + ("  (stopped by --max-minutes)" if r.stopped_early else ""),
        f"  data            {r.episodes} episodes, {r.env_steps} steps",
        f"  training        {r.train_steps} steps, {r.train_seconds:.1f} s this run "
        f"({r.batches_per_s:.2f} batches/s, {r.device}, preset {r.preset})",
    ]
    if r.last_loss:
        lines.append(
            f"  last loss       {r.last_loss['loss']:.2f} (obs {r.last_loss['obs']:.2f}, "
            f"reward {r.last_loss['reward']:.3f}, kl {r.last_loss['kl']:.2f})"
        )
    if not math.isnan(r.eval_return):
        lines.append(f"  eval return     {r.eval_return:.1f}")
    if not math.isnan(r.random_return):
        lines.append(f"  random return   {r.random_return:.1f} (seed episodes of this run)")
    return "\n".join(lines)
