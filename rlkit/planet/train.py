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
most one checkpoint interval. Episodes collected after the checkpoint are moved to
``output_dir/discarded_episodes/`` and collected again, so a resumed run matches an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlkit.planet.config import WorldModelConfig, WorldModelResult, summary_text
from rlkit.planet.dataset import EpisodeDataset, batch_to_device, keep_batch
from rlkit.planet.envs import PixelEnv
from rlkit.planet.episodes import make_planner, planning_threads, run_episode, write_openloop_png
from rlkit.planet.model import WorldModel
from rlkit.planet.storage import EPISODE_RE, EpisodeStorage
from rlkit.progress import Progress, format_duration
from rlkit.progress import progress as make_progress
from rlkit.rundir import RunDir, RunLock, clean_stale_temps, say
from rlkit.utils import (
    episode_seed,
    from_json,
    idle_cores,
    resolve_device,
    torch_save_atomic,
    trim_csv,
)

__all__ = ["WorldModelConfig", "WorldModelResult", "train_world_model", "summary_text"]

logger = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------- the run
def train_world_model(
    cfg: WorldModelConfig, *, argv: list[str] | None = None, progress: bool = True
) -> WorldModelResult:
    """Run (or resume) the online PlaNet loop; see the module docstring."""
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    env = cfg.make_env()
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
            storage = EpisodeStorage(cfg.data_dir, workers=cfg.loading_threads)
            # the episodes are part of the run's state (a resume must match an
            # uninterrupted run), so one process writes them at a time too
            same = storage.root.resolve() == run.path.resolve()
            with contextlib.nullcontext() if same else RunLock(storage.root):
                for p in clean_stale_temps(storage.root, recursive=False):
                    say(f"removed {p}, left by a killed process")
                storage.check_env(cfg.env_spec(), env.action_dim)
                loop = _Loop(cfg, run, storage, env, device, t_start)
                loop.resume(argv)
                loop.announce()
                loop.seed_episodes(progress)
                loop.make_dataset()
                loop.iterate(progress)
                return loop.finish()
    finally:
        env.close()


class _Loop:
    """The state of one run and its steps, in the order :func:`train_world_model` calls them:
    resume, seed episodes, dataset, then per iteration train / collect / evaluate / log /
    checkpoint."""

    def __init__(
        self,
        cfg: WorldModelConfig,
        run: RunDir,
        storage: EpisodeStorage,
        env: PixelEnv,
        device: torch.device,
        t_start: float,
    ) -> None:
        self.cfg, self.run, self.out, self.storage, self.env = cfg, run, run.path, storage, env
        self.device = device
        if device.type == "cpu":
            # The idle cores: on the shared 2-core machine a second thread spinning against
            # other jobs made a train step 11x slower (bench_world_model).
            torch.set_num_threads(cfg.threads or idle_cores())
        self.batch_size = cfg.run_value("batch_size", device)
        self.seq_len = cfg.run_value("seq_len", device)
        self.plan_cfg = cfg.planner(device)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.model = WorldModel(
            env.action_dim, cfg.sizes(device), bf16_convs=cfg.bf16_convs(device)
        ).to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, eps=1e-4)
        self.iteration, self.train_step = 0, 0  # iterations / gradient steps checkpointed
        self.resumed_from: int | None = None
        self.deadline = t_start + 60 * cfg.max_minutes if cfg.max_minutes else math.inf
        self.random_returns: list[float] = []
        self.last: dict[str, float] = {}
        self.bar: Progress | None = None  # the iterations' bar, ticked per gradient step
        self.eval_return = math.nan
        self.train_seconds, self.batches = 0.0, 0
        self.stopped_early = False
        self.writer: Any = None

    # -- resume: the newest readable checkpoint, the episodes it knew, the logs up to it
    def resume(self, argv: list[str] | None) -> None:
        cfg, out = self.cfg, self.out
        found = load_newest_checkpoint(out, self.device) if self.run.resuming else None
        if found is not None:
            path, blob = found
            if blob.get("spec") != self.model.spec() or blob.get("env_spec") != cfg.env_spec():
                raise ValueError(
                    f"{path}: checkpoint is for model {blob.get('spec')} on "
                    f"{blob.get('env_spec')}, this run builds {self.model.spec()} on "
                    f"{cfg.env_spec()}; resume with the same sizes and env, or choose another "
                    "output_dir"
                )
            self.model.load_state_dict(blob["model"])
            self.opt.load_state_dict(blob["optimizer"])
            self.iteration, self.train_step = blob["iteration"], blob["train_step"]
            torch.set_rng_state(blob["rng"]["torch"])
            if self.device.type == "cuda" and blob["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(blob["rng"]["cuda"])
            random.setstate(blob["rng"]["python"])
            self.resumed_from = self.iteration
            moved = _set_aside_later_episodes(self.storage, blob.get("episodes"), out)
            self.run.saved = f"checkpoint at iteration {self.iteration}"
            note = f"resuming {out} at iteration {self.iteration} (step {self.train_step}); "
            note += f"{len(self.storage.indexed())} episodes on disk, no re-collection"
            if moved:
                note += f"; {len(moved)} written after the checkpoint set aside in "
                note += str(out / DISCARDED)
            say(note)
        elif self.run.resuming:
            say(f"{out}: no readable checkpoint; starting the run over")
        # written once the checkpoint is known to fit this config (a refused resume keeps
        # the folder's config.resolved.yml)
        self.run.record_config(cfg, section="world_model", argv=argv)
        trim_csv(out / "metrics.csv", lambda r: int(r[0]) < self.iteration, METRICS)
        if cfg.tensorboard:
            # purge the events after the checkpoint's step; that step was logged before it
            self.writer = _tb_writer(out, self.train_step + 1)

    # -- the plan, printed before any work (the time per iteration follows the first one)
    def announce(self) -> None:
        cfg = self.cfg
        on_disk = len(self.storage.indexed())
        missing = max(0, cfg.seed_episodes - on_disk)
        left = max(0, cfg.iterations - self.iteration)
        budget = f"; stops after {cfg.max_minutes:g} min (--max-minutes)" if cfg.max_minutes else ""
        say(
            f"plan: collect {missing} seed episodes ({on_disk} on disk), then {left} iterations "
            f"({self.iteration + 1}..{cfg.iterations}) of {cfg.train_steps} train steps and "
            f"{cfg.collect_episodes} collected episode(s) each{budget}"
        )
        convs = "bf16" if self.model.encoder.dtype == torch.bfloat16 else "fp32"
        threads = f", {torch.get_num_threads()} threads" if self.device.type == "cpu" else ""
        say(
            f"model: preset {cfg.preset_name(self.device)}, batches {self.batch_size} x "
            f"{self.seq_len}, {convs} convs, free nats {cfg.loss_value('free_nats', self.device):g}"
            f", KL balance {cfg.loss_value('kl_balance', self.device):g}, {self.device}{threads}"
        )

    def announce_pace(self, seconds: float, done: int) -> None:
        """After the first iteration of this process: its time and the ETA of the rest."""
        left = self.cfg.iterations - done
        if left <= 0:
            return
        eta = seconds * left
        text = f"first iteration took {seconds:.1f} s; {left} more: ~{format_duration(eta)}"
        if self.cfg.max_minutes:
            remaining = max(0.0, self.deadline - time.perf_counter())
            if remaining < eta:
                text += f" (--max-minutes stops the run in ~{format_duration(remaining)})"
        say(text)

    # -- seed episodes: top up to --seed-episodes (existing ones count)
    def seed_episodes(self, progress: bool) -> None:
        missing = self.cfg.seed_episodes - len(self.storage.discover())
        with make_progress(max(0, missing), "seed episodes", "ep", enabled=progress) as bar:
            for _ in range(max(0, missing)):
                index = self.storage.next_index()
                ep = run_episode(self.env, episode_seed(self.cfg.seed, index, "demo"))
                ep.save(self.storage)
                self.random_returns.append(ep.ret)
                bar.update(1)

    def make_dataset(self) -> None:
        cfg = self.cfg
        self.dataset = EpisodeDataset(
            self.storage,
            self.seq_len,
            self.batch_size,
            cfg.train_steps,
            preload_dtype=cfg.preload_dtype if cfg.preload_images else "uint8",
            cache_mb=cfg.cache_size if cfg.cache_images else None,
            seed=cfg.seed,
        )
        if self.dataset.num_episodes == 0:
            raise ValueError(
                f"{cfg.data_dir}: no episode has >= seq_len={self.seq_len} actions; lower "
                "--seq-len or raise --max-episode-steps"
            )
        self.loader = None
        if cfg.num_workers > 0:
            self.loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=cfg.num_workers,
                collate_fn=keep_batch,
                pin_memory=self.device.type == "cuda",
            )

    # -- the iterations
    def iterate(self, progress: bool) -> None:
        cfg = self.cfg
        with (self.out / "metrics.csv").open("a", newline="") as mf:  # trim_csv wrote the header
            log = csv.writer(mf)
            # counted in gradient steps, so a line comes every few seconds, not per iteration
            left = (cfg.iterations - self.iteration) * cfg.train_steps
            bar = self.bar = make_progress(
                self.train_step + left,
                "world model",
                "step",
                initial=self.train_step,
                enabled=progress,
            )
            first = self.iteration
            for it in range(self.iteration, cfg.iterations):
                t_it = time.perf_counter()
                self.dataset.refresh()
                self.dataset.set_iteration(it)
                train_s, steps = self.train(it)
                returns, new_steps, collect_s = self.collect()
                done = it + 1
                eval_ret = self.evaluate(done)
                train_ret = float(np.mean(returns)) if returns else math.nan
                row = {
                    "iteration": it,
                    "train_step": self.train_step,
                    "episodes": self.dataset.num_episodes + len(returns),
                    "env_steps": self.dataset.num_steps + new_steps,
                    "loss": self.last["loss"],
                    "obs_loss": self.last["obs"],
                    "reward_loss": self.last["reward"],
                    "kl": self.last["kl"],
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
                self.log_tensorboard(row, bool(returns))
                bar.set_postfix(it=f"{done}/{cfg.iterations}", loss=f"{self.last['loss']:.1f}",
                                ret=f"{train_ret:.0f}")  # fmt: skip
                if it == first:
                    self.announce_pace(time.perf_counter() - t_it, done)
                if self.checkpoint(done):
                    break
            bar.close()
        if self.writer is not None:
            self.writer.close()

    def train(self, it: int) -> tuple[float, int]:
        """--train-steps gradient steps (fewer past the --max-minutes deadline)."""
        cfg, model, opt = self.cfg, self.model, self.opt
        model.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {"loss": 0.0, "obs": 0.0, "reward": 0.0, "kl": 0.0}
        batch_iter = iter(self.loader) if self.loader is not None else None
        steps = 0
        for k in range(cfg.train_steps):
            if k and time.perf_counter() > self.deadline:
                break  # --max-minutes is a hard budget: stop inside the iteration
            if batch_iter is not None:
                host = next(batch_iter)
            else:
                host = self.dataset.sample_batch(first_index=k * self.batch_size, reuse=True)
            loss, parts = model.loss(
                batch_to_device(host, self.device),
                cfg.loss_value("free_nats", self.device),
                cfg.loss_value("kl_balance", self.device),
            )
            if not torch.isfinite(loss):
                raise ValueError(
                    f"iteration {it}, train step {self.train_step + 1}: the loss is not finite "
                    f"({loss.item()}); lower --lr (now {cfg.lr}) or --grad-clip; the "
                    f"checkpoint of iteration {self.iteration} is kept"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            self.train_step += 1
            steps += 1
            if self.bar is not None:
                self.bar.update(1)
            sums["loss"] += loss.item()
            for key, v in parts.items():
                sums[key] += v
        train_s = time.perf_counter() - t0
        self.train_seconds += train_s
        self.batches += steps
        self.last = {k: v / steps for k, v in sums.items()}
        return train_s, steps

    def collect(self) -> tuple[list[float], int, float]:
        """--collect-episodes with the planner + exploration noise; (returns, steps, s)."""
        cfg = self.cfg
        self.model.eval()
        t1 = time.perf_counter()
        returns, new_steps = [], 0
        with planning_threads(self.device):
            for _ in range(cfg.collect_episodes):
                if time.perf_counter() > self.deadline:
                    break
                index = self.storage.next_index()
                noise_seed = episode_seed(cfg.seed, index, "noise")
                ep = run_episode(
                    self.env,
                    episode_seed(cfg.seed, index, "demo"),
                    self.model,
                    make_planner(self.model, self.plan_cfg, noise_seed),
                    cfg.explore_noise,
                    np.random.default_rng(noise_seed),
                )
                ep.save(self.storage)
                returns.append(ep.ret)
                new_steps += len(ep.action)
        return returns, new_steps, time.perf_counter() - t1

    def evaluate(self, done: int) -> float:
        """Every --eval-every iterations: the planner without noise, and the open-loop PNG."""
        cfg = self.cfg
        due = cfg.eval_every and cfg.eval_episodes
        due = due and (done % cfg.eval_every == 0 or done == cfg.iterations)
        if not due or time.perf_counter() > self.deadline:
            return math.nan
        # Evaluation draws from its own RNG stream: it must not change what training sees,
        # so a run evaluated at iteration k continues like one that was not.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), planning_threads(self.device):
            eps = []
            for j in range(cfg.eval_episodes):
                s = episode_seed(cfg.seed, j, "test")
                torch.manual_seed(s)
                planner = make_planner(self.model, self.plan_cfg, s)
                eps.append(run_episode(self.env, s, self.model, planner))
            write_openloop_png(self.model, eps[0], self.out / f"openloop_{done:06d}.png")
        self.eval_return = float(np.mean([e.ret for e in eps]))
        return self.eval_return

    def log_tensorboard(self, row: dict[str, Any], collected: bool) -> None:
        if self.writer is None:
            return
        for key in ("loss", "obs_loss", "reward_loss", "kl", "batches_per_s"):
            self.writer.add_scalar(f"train/{key}", row[key], self.train_step)
        if collected:
            self.writer.add_scalar("collect/return", row["train_return"], self.train_step)
        if not math.isnan(row["eval_return"]):
            self.writer.add_scalar("eval/return", row["eval_return"], self.train_step)
        self.writer.flush()

    def checkpoint(self, done: int) -> bool:
        """Checkpoint when due (or at the end, or past the deadline); True: stop the run."""
        cfg = self.cfg
        over_time = time.perf_counter() > self.deadline
        if done % cfg.checkpoint_every == 0 or done == cfg.iterations or over_time:
            with self.run.saving(
                f"checkpoint at iteration {done}", checkpoint_file(self.out, done)
            ):
                save_checkpoint(self.out, self.model, self.opt, done, self.train_step, cfg,
                                self.storage)  # fmt: skip
            self.iteration = done
        if over_time:
            self.stopped_early = True
            say(f"--max-minutes {cfg.max_minutes:g} reached after iteration {done}")
        return over_time

    def finish(self) -> WorldModelResult:
        self.dataset.refresh()  # count the episodes collected in the last iteration
        result = WorldModelResult(
            output=self.out,
            iterations=self.iteration,
            train_steps=self.train_step,
            episodes=self.dataset.num_episodes,
            env_steps=self.dataset.num_steps,
            last_loss=self.last,
            eval_return=self.eval_return,
            random_return=float(np.mean(self.random_returns)) if self.random_returns else math.nan,
            train_seconds=self.train_seconds,
            batches_per_s=self.batches / max(self.train_seconds, 1e-9),
            device=str(self.device),
            preset=self.cfg.preset_name(self.device),
            resumed_from=self.resumed_from,
            stopped_early=self.stopped_early,
        )
        complete = not self.stopped_early and self.iteration >= self.cfg.iterations
        self.run.finish(result, summary_text(result), complete=complete)
        return result


# ---------------------------------------------------------------------- checkpoints
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


def checkpoint_file(out: Path, iteration: int) -> Path:
    return out / "checkpoints" / f"ckpt_{iteration:06d}.pt"


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
    path = checkpoint_file(out, iteration)
    path.parent.mkdir(exist_ok=True)
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
