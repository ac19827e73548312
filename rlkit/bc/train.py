"""The BC training loop: a checkpointable trainer, DAgger rounds, evaluation and SB3 export."""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rlkit.bc.config import BCConfig
from rlkit.bc.data import Batches, BCData, load_bc_data, resolve_loader, split_episodes
from rlkit.envs.expert import Expert
from rlkit.envs.racing import make_observation_space
from rlkit.lerobot import write_dataset
from rlkit.policy import BCPolicy, PixelBCPolicy, export_sb3
from rlkit.progress import progress as make_progress
from rlkit.report import eval_payload, format_eval_table
from rlkit.rollout import (
    EvalResult,
    evaluate_drivers,
    expert_driver,
    pixel_policy_driver,
    policy_driver,
    rollout,
)
from rlkit.rundir import RunDir, say
from rlkit.utils import (
    from_json,
    idle_cores,
    resolve_device,
    torch_save_atomic,
    trim_csv,
    write_json_atomic,
)

__all__ = ["LOG_HEADER", "BCResult", "dagger_round", "summary_text", "train_bc"]

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass
class BCResult:
    output: Path
    best_val_loss: float
    epochs_run: int
    train_seconds: float
    samples_per_s: float
    loader: str
    device: str
    eval: dict[str, EvalResult] = field(default_factory=dict)


class _Trainer:
    """One optimisation run over a (growing, with DAgger) training set; checkpointable."""

    def __init__(self, cfg: BCConfig, data: BCData, run: RunDir, device: torch.device) -> None:
        self.cfg, self.data, self.run, self.out, self.device = cfg, data, run, run.path, device
        torch.manual_seed(cfg.seed)
        act_dim, norm = data.action.shape[1], (data.obs_mean, data.obs_std)
        bounds = (data.act_low, data.act_high)
        self.policy: BCPolicy | PixelBCPolicy
        if data.pixels:  # the frame, and the one --frame-gap steps earlier
            gap = 0 if data.prev is None else cfg.frame_gap
            self.policy = PixelBCPolicy(
                data.obs.shape[1:], act_dim, cfg.hidden, *norm, *bounds, gap=gap, view=data.view
            ).to(device)
        else:
            self.policy = BCPolicy(data.obs.shape[1], act_dim, cfg.hidden, *norm, *bounds)
            self.policy.to(device)
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)
        self.best_val = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epoch = 0  # epochs done in the current phase
        self.total_epochs = 0
        self.phase = 0  # 0 = behaviour cloning, k = after DAgger round k
        self.bad_epochs = 0
        self.samples = 0
        self.seconds = 0.0
        self.extra_obs = np.zeros((0, *data.obs.shape[1:]), data.obs.dtype)  # DAgger data
        self.extra_act = np.zeros((0, data.action.shape[1]), np.float32)
        train, val = split_episodes(data.episode, cfg.val_fraction, cfg.seed)
        self.train_mask, self.val_mask = train, val
        self.loader_kind = resolve_loader(
            cfg, (data.obs.nbytes if data.pixels else data.obs[train].nbytes) + data.action.nbytes
        )

    # -- data
    def batches(self) -> Batches:
        rows = prev = None
        if self.data.pixels:  # frames stay where they are: batches gather rows (and gaps)
            x, rows, prev = self.data.obs, np.flatnonzero(self.train_mask), self.data.prev
            y = self.policy.normalise_action(self.data.action)
        else:
            x = np.concatenate([self.data.obs[self.train_mask], self.extra_obs])
            y = self.policy.normalise_action(
                np.concatenate([self.data.action[self.train_mask], self.extra_act])
            )
        kind = self.loader_kind = resolve_loader(self.cfg, x.nbytes + y.nbytes)
        cuda = self.device.type == "cuda"
        pin = cuda and self.cfg.pin_memory != "off"  # auto = on with CUDA
        if self.cfg.pin_memory == "on" and not cuda:
            logger.warning("--pin-memory on has no effect without CUDA; not pinning")
        workers = self.cfg.num_workers if kind == "dataloader" else 0
        seed = self.cfg.seed + self.phase
        return Batches(x, y, self.cfg.batch_size, kind, self.device, workers, pin, seed, rows, prev)

    @torch.no_grad()
    def val_loss(self) -> float:
        if not self.val_mask.any():
            return math.nan
        self.policy.eval()
        rows = np.flatnonzero(self.val_mask)
        y = self.policy.normalise_action(self.data.action[rows])
        step = 1024 if self.data.pixels else 65536
        total = 0.0
        for i in range(0, len(rows), step):
            x = torch.as_tensor(self.data.inputs(rows[i : i + step]), device=self.device)
            yb = torch.as_tensor(y[i : i + step], device=self.device)
            total += nn.functional.mse_loss(self.policy(x), yb, reduction="sum").item()
        return total / y.size

    # -- checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.opt.state_dict(),
            "best_val": self.best_val,
            "best_state": self.best_state,
            "epoch": self.epoch,
            "total_epochs": self.total_epochs,
            "phase": self.phase,
            "bad_epochs": self.bad_epochs,
            "samples": self.samples,
            "seconds": self.seconds,
            "extra_obs": self.extra_obs,
            "extra_act": self.extra_act,
            "spec": self.policy.spec(),
        }

    def save_checkpoint(self) -> None:
        torch_save_atomic(self.state(), self.out / CHECKPOINT)

    def load_checkpoint(self) -> bool:
        """Load ``checkpoint.pt``; a damaged one is skipped with a warning (returns False)."""
        path = self.out / CHECKPOINT
        try:
            blob = torch.load(path, map_location=self.device, weights_only=False)
            if not isinstance(blob, dict) or "policy" not in blob:
                raise ValueError("not a train_bc.py checkpoint")
        except Exception as e:  # torch raises many kinds for a truncated or foreign file
            say(f"warning: {path} is damaged ({type(e).__name__}: {e}); starting from epoch 0")
            return False
        if blob.get("spec") != self.policy.spec():
            raise ValueError(
                f"{path}: checkpoint is for a policy {blob.get('spec')}, this run builds "
                f"{self.policy.spec()}; resume with the same --hidden, --frame-gap and data, or "
                "use a new --output"
            )
        self.policy.load_state_dict(blob["policy"])
        self.opt.load_state_dict(blob["optimizer"])
        for key in ("best_val", "best_state", "epoch", "total_epochs", "phase", "bad_epochs"):
            setattr(self, key, blob[key])
        self.samples, self.seconds = blob["samples"], blob["seconds"]
        self.extra_obs, self.extra_act = blob["extra_obs"], blob["extra_act"]
        return True

    # -- the loop
    def run_phase(self, epochs: int, log_file: IO[str], progress: bool) -> None:
        """Train up to ``epochs`` epochs (continuing a resumed phase) with early stopping."""
        if self.epoch >= epochs or self.bad_epochs >= self.cfg.patience:
            return
        batches = self.batches()
        log = csv.writer(log_file)
        desc = "bc" if self.phase == 0 else f"dagger {self.phase}"
        first = self.epoch
        bar = make_progress(epochs - first, desc, "epoch", enabled=progress)
        per_batch = 1 / max(1, len(batches))  # a long epoch shows progress inside it too
        for epoch in range(self.epoch, epochs):
            t0 = time.perf_counter()
            self.policy.train()
            total, count = 0.0, 0
            for xb, yb in batches.epoch(epoch):
                loss = nn.functional.mse_loss(self.policy(xb), yb)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                total += loss.item() * len(xb)
                count += len(xb)
                bar.update(per_batch)
            train_loss = total / count
            val = self.val_loss()
            if not math.isfinite(train_loss) or (self.val_mask.any() and not math.isfinite(val)):
                raise ValueError(
                    f"epoch {self.total_epochs + 1}: the loss is not finite (train {train_loss}, "
                    f"val {val}); lower --lr (now {self.cfg.lr}) or check the data in "
                    f"{self.cfg.data}; the last good checkpoint is kept"
                )
            dt = time.perf_counter() - t0
            self.seconds += dt
            self.samples += count
            self.epoch, self.total_epochs = epoch + 1, self.total_epochs + 1
            score = val if not math.isnan(val) else train_loss
            if score < self.best_val:
                self.best_val, self.bad_epochs = score, 0
                self.best_state = {
                    k: v.detach().clone() for k, v in self.policy.state_dict().items()
                }
                self.policy.save(self.out / "bc_policy.pt")
            else:
                self.bad_epochs += 1
            log.writerow(
                [self.total_epochs, self.phase, f"{train_loss:.6g}", f"{val:.6g}", f"{dt:.3f}"]
            )
            log_file.flush()  # the log survives a kill like the checkpoint does
            bar.set_postfix(
                train=f"{train_loss:.4f}", val=f"{val:.4f}", samples_s=f"{count / dt:,.0f}"
            )
            bar.update(epoch + 1 - first - bar.n)  # a whole epoch, whatever the rounding
            saved = f"checkpoint at epoch {self.total_epochs}"
            with self.run.saving(saved, self.out / CHECKPOINT):
                self.save_checkpoint()
            if self.bad_epochs >= self.cfg.patience:
                logger.info("early stop after %d epochs without improvement", self.bad_epochs)
                break
        bar.close()

    def use_best(self) -> None:
        if self.best_state is not None:
            self.policy.load_state_dict(self.best_state)


def dagger_round(
    trainer: _Trainer, round_idx: int, expert: Expert
) -> tuple[np.ndarray, np.ndarray]:
    """Drive ``dagger_episodes`` fresh tracks with the current policy; return the visited
    observations and the expert's labels for them (the states the policy actually reaches),
    step by step (time-major)."""
    cfg, env_config = trainer.cfg, trainer.data.env_config
    assert env_config is not None
    n = cfg.dagger_episodes
    trainer.policy.eval()
    run = rollout(
        policy_driver(trainer.policy),
        env_config,
        cfg.seed,
        range(round_idx * n, (round_idx + 1) * n),
        "dagger",
        labels=expert_driver(expert),
        record_steps=True,
    )
    return run.by_time(run.obs), run.by_time(run.action)


def _write_dagger_dataset(trainer: _Trainer, out: Path) -> None:
    """The aggregated training set (demonstrations + DAgger labels) as a LeRobot dataset."""
    data = trainer.data
    extra = len(trainer.extra_obs)
    # DAgger frames are stored as one extra episode per round's concatenation: keep it simple
    # and honest by giving them their own episode index after the demonstrations.
    demo_eps = np.unique(data.episode, return_inverse=True)[1]
    episode = np.concatenate([demo_eps, np.full(extra, demo_eps.max() + 1)])
    done = np.append(np.diff(episode) != 0, True)  # the last frame of every episode
    write_dataset(
        out,
        {
            trainer.cfg.obs_key: np.concatenate([data.obs, trainer.extra_obs]),
            trainer.cfg.action_key: np.concatenate([data.action, trainer.extra_act]),
            "next.done": done,
            "episode_index": episode,
        },
        fps=round(1.0 / data.env_config.dt) if data.env_config else 20,
        tasks=["behaviour cloning + DAgger labels"],
        overwrite=True,
    )


def _has_checkpoint(out: Path) -> bool:
    return (out / CHECKPOINT).is_file()


LOG_HEADER = ["epoch", "phase", "train_loss", "val_loss", "seconds"]


def train_bc(cfg: BCConfig, *, argv: list[str] | None = None, progress: bool = True) -> BCResult:
    """Train, DAgger, evaluate and export; see the module docstring for the outputs."""
    data = load_bc_data(cfg, progress)  # validates the input before anything is written
    if cfg.dagger_rounds and data.env_config is None:
        raise ValueError(
            f"--dagger-rounds needs rlkit racing data ({cfg.data} has no meta/rlkit_env.json)"
        )
    device = resolve_device(cfg.device)
    run = RunDir(
        cfg.output, "bc", resume=cfg.resume, overwrite=cfg.overwrite, has_checkpoint=_has_checkpoint
    )
    with run:
        done = run.start(cfg, section="bc", argv=argv)
        if done is not None:
            return from_json(BCResult, done)
        return _train(cfg, data, run, device, progress)


def _train(
    cfg: BCConfig, data: BCData, run: RunDir, device: torch.device, progress: bool
) -> BCResult:
    out = run.path
    trainer = _Trainer(cfg, data, run, device)
    if device.type == "cpu":
        # Measured (bench_bc): a 256x256 MLP at batch 256 trains 1.5x faster on 2 idle cores
        # than on 1, but 5x slower on 2 threads when another process keeps a core busy;
        # DataLoader worker processes need the cores themselves.
        workers = cfg.num_workers if trainer.loader_kind == "dataloader" else 0
        torch.set_num_threads(cfg.threads or (1 if workers else idle_cores()))
    log_path = out / "train_log.csv"
    if run.resuming and trainer.load_checkpoint():
        kept = trim_csv(log_path, lambda r: int(r[0]) <= trainer.total_epochs, LOG_HEADER)
        run.saved = f"checkpoint at epoch {trainer.total_epochs}"
        say(
            f"resuming {out} at epoch {trainer.total_epochs} (phase {trainer.phase}, "
            f"{trainer.epoch} epochs into it); train_log.csv keeps {kept} rows"
        )
    else:
        trim_csv(log_path, lambda r: False, LOG_HEADER)  # a new log: the header only
    expert = Expert()
    with log_path.open("a", newline="") as f:
        # Phase 0: behaviour cloning; phase k: retraining after DAgger round k.
        while True:
            epochs = cfg.epochs if trainer.phase == 0 else cfg.dagger_epochs
            trainer.run_phase(epochs, f, progress)
            if trainer.phase >= cfg.dagger_rounds:
                break
            trainer.use_best()
            obs, act = dagger_round(trainer, trainer.phase, expert)
            trainer.extra_obs = np.concatenate([trainer.extra_obs, obs])
            trainer.extra_act = np.concatenate([trainer.extra_act, act])
            trainer.phase += 1
            trainer.epoch, trainer.bad_epochs = 0, 0
            trainer.best_val = math.inf  # the training set changed; validation restarts
            trainer.save_checkpoint()
            _write_dagger_dataset(trainer, out / "dagger")
            logger.info("DAgger round %d: +%d labelled frames", trainer.phase, len(obs))
    trainer.use_best()
    policy = trainer.policy.cpu().eval()
    policy.save(out / "bc_policy.pt")

    if isinstance(policy, BCPolicy):  # RL trains on states: a pixel policy has no SB3 export
        obs_space = (
            make_observation_space(data.env_config)
            if data.env_config is not None
            else spaces.Box(-np.inf, np.inf, (data.obs.shape[1],), np.float32)
        )
        env_dict = data.env_config.to_dict() if data.env_config is not None else None
        export_sb3(policy, out, obs_space, init_std=cfg.init_std, env_config=env_dict)

    result = BCResult(
        output=out,
        best_val_loss=trainer.best_val,
        epochs_run=trainer.total_epochs,
        train_seconds=trainer.seconds,
        samples_per_s=trainer.samples / max(trainer.seconds, 1e-9),
        loader=trainer.loader_kind,
        device=str(device),
    )
    if cfg.eval_episodes and data.env_config is not None:
        bc = (
            pixel_policy_driver(policy)
            if isinstance(policy, PixelBCPolicy)
            else policy_driver(policy)
        )
        drivers = {"bc": bc, "expert": expert_driver(expert)}
        result.eval = evaluate_drivers(drivers, data.env_config, cfg.eval_episodes, cfg.seed)
        write_json_atomic(out / "eval.json", eval_payload(result.eval, cfg.eval_episodes, cfg.seed))
    elif cfg.eval_episodes:
        logger.warning("%s is not rlkit racing data: skipping the evaluation on tracks", cfg.data)
    run.finish(result, summary_text(result))
    return result


def summary_text(result: BCResult) -> str:
    lines = [
        f"  output          {result.output}",
        f"  epochs          {result.epochs_run}  (best val loss {result.best_val_loss:.5f})",
        f"  training        {result.train_seconds:.1f} s  ({result.samples_per_s:,.0f} samples/s, "
        f"{result.loader} loader, {result.device})",
    ]
    if result.eval:
        lines += ["", format_eval_table(result.eval)]
    return "\n".join(lines)
