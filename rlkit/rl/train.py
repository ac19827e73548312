"""``train_rl``: build or resume the SB3 model (warm start: BC weights, demonstrations in the
replay buffer), learn with the callbacks, compare and report; ``eval_only``: evaluate a saved
model."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from rlkit.envs.racing import RacingEnv
from rlkit.envs.sim import RacingConfig
from rlkit.envs.vec_env import RacingVecEnv
from rlkit.policy import BCPolicy, build_policy_kwargs, load_bc_into, read_export_meta
from rlkit.report import (
    eval_payload,
    format_eval_table,
    label_policies,
    write_learning_curve_png,
    write_video,
)
from rlkit.rl.callbacks import (
    BEST_MODEL,
    BCRegulariser,
    CheckpointEvery,
    CriticWarmup,
    EvalEvery,
    ProgressBar,
    StdSchedule,
    WallClock,
    WallClockLimit,
    newest_checkpoint,
    restore_best,
    save_checkpoint,
    save_model_atomic,
)
from rlkit.rl.config import ALGOS, RLConfig
from rlkit.rollout import (
    ACTION_KEY,
    OBS_KEY,
    EvalResult,
    evaluate,
    evaluate_drivers,
    expert_driver,
    model_driver,
    policy_driver,
)
from rlkit.rundir import RunDir, say
from rlkit.utils import from_json, resolve_device, trim_csv, worker_setup, write_json_atomic

if TYPE_CHECKING:
    from rlkit.rl.seeds import SeedsResult

logger = logging.getLogger(__name__)


@dataclass
class RLResult:
    output: Path
    timesteps: int
    wall_s: float
    steps_per_s: float
    eval: dict[str, EvalResult] = field(default_factory=dict)  # on the test tracks
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)  # which model, which step


# ------------------------------------------------------------------ environment and model
def _abandon(env: VecEnv) -> None:
    """Close ``env`` after an error or Ctrl-C without talking to its workers: one that was
    interrupted between sending ``step`` to the workers and reading every reply leaves a
    worker whose reply was already read, and SB3's ``close`` would wait for it forever."""
    if isinstance(env, SubprocVecEnv):
        for process in env.processes:
            process.terminate()
        for process in env.processes:
            process.join(timeout=5)
        env.closed = True
    else:
        env.close()


def make_vec_env(cfg: RLConfig, env_config: RacingConfig) -> VecEnv:
    """The training VecEnv; car/env ``i`` is seeded with ``seed + i``.

    Its cars leave the road at ``cfg.train_edge`` of the half-width (evaluation: at the edge).
    """
    n = cfg.num_envs
    env_config = dataclasses.replace(env_config, edge=cfg.train_edge)
    if cfg.vec == "batched":
        return RacingVecEnv(n, config=env_config, seed=cfg.run_seed)

    subproc = cfg.vec == "subproc"

    def make() -> Monitor:
        if subproc:  # runs in the worker process
            worker_setup()
        return Monitor(RacingEnv(config=env_config))

    fns = [make] * n
    env = (
        SubprocVecEnv(fns, start_method="forkserver") if cfg.vec == "subproc" else DummyVecEnv(fns)
    )
    env.seed(cfg.run_seed)
    return env


def build_model(
    cfg: RLConfig, env: VecEnv, bc_meta: dict[str, Any] | None, device: str
) -> BaseAlgorithm:
    """A fresh SB3 model; with a BC export (``bc_meta``) its network has the BC shape."""
    cls = ALGOS[cfg.algo]
    kwargs: dict[str, Any] = {
        "learning_rate": LinearSchedule(cfg.lr, 0.0, 1.0)
        if cfg.lr_schedule == "linear"
        else cfg.lr,
        "batch_size": cfg.batch_size,
        "seed": cfg.run_seed,
        "gamma": cfg.gamma,
        "device": device,
        "verbose": 0,
        "tensorboard_log": cfg.tensorboard,
    }
    if bc_meta is not None:
        kwargs["policy_kwargs"] = build_policy_kwargs(bc_meta["policy_kwargs"][cfg.algo])
    if cfg.algo in ("sac", "td3"):
        n = env.num_envs
        kwargs.update(
            buffer_size=cfg.buffer_size,
            train_freq=cfg.train_freq,
            # With N envs SB3 collects N transitions per vector step: keep one gradient step
            # per transition unless told otherwise (an explicit update-to-data ratio).
            gradient_steps=cfg.gradient_steps or n * cfg.train_freq,
            learning_starts=cfg.learning_starts
            if cfg.learning_starts is not None
            else (0 if bc_meta else 5000),
        )
        if cfg.algo == "sac" and bc_meta is not None:
            # Start from the BC policy's small std; let the entropy coefficient adapt from low.
            kwargs["ent_coef"] = "auto_0.01"
        if cfg.algo == "td3":
            kwargs["action_noise"] = NormalActionNoise(np.zeros(2), 0.1 * np.ones(2))
    else:
        kwargs.update(
            n_steps=cfg.n_steps,
            batch_size=cfg.batch_size,
            target_kl=cfg.target_kl,
            gae_lambda=cfg.gae_lambda,
        )
    return cls("MlpPolicy", env, **kwargs)


def _env_config(cfg: RLConfig, bc_meta: dict[str, Any] | None) -> RacingConfig:
    if bc_meta is not None and bc_meta.get("env_config"):
        base = RacingConfig.from_dict(bc_meta["env_config"])
    else:
        base = RacingConfig()
    return dataclasses.replace(base, max_episode_steps=cfg.max_episode_steps)


def _finite(model: BaseAlgorithm) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.policy.parameters())


def _has_checkpoint(out: Path) -> bool:
    return newest_checkpoint(out) is not None


# ------------------------------------------------------------------ demonstrations
# The features are named as in train_bc.py: --obs-key / --action-key, by default the
# collector's observation.state and action.
def load_demos(
    path: str,
    model: BaseAlgorithm,
    obs_key: str = OBS_KEY,
    action_key: str = ACTION_KEY,
    extra: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """``obs`` and ``action`` (and the ``extra`` columns) of a LeRobot dataset, checked
    against the env of ``model``."""
    from rlkit.lerobot import DatasetReader

    cols = DatasetReader(path).load_columns(list(dict.fromkeys([obs_key, action_key, *extra])))
    obs, act = cols[obs_key], cols[action_key]
    want = (model.observation_space.shape, (2,))
    if (obs.shape[1:], act.shape[1:]) != want:
        raise ValueError(
            f"--demos {path}: '{obs_key}' {obs.shape[1:]} and '{action_key}' {act.shape[1:]} "
            f"per frame do not match the env's observation {want[0]} and action {want[1]}; "
            "pass --obs-key/--action-key naming them"
        )
    return {"obs": obs, "action": act, **{k: cols[k] for k in extra}}


def prefill_demos(
    model: OffPolicyAlgorithm,
    path: str,
    env_config: RacingConfig,
    obs_key: str = OBS_KEY,
    action_key: str = ACTION_KEY,
) -> int:
    """Write the demonstration transitions into the replay buffer; returns how many.

    SB3's buffer stores ``(position, env)`` slots; the transitions fill whole positions
    (``n_envs`` at a time) in one vectorised copy. The last frame of an episode that left the
    track is terminal (its next observation is irrelevant). The last frame of an episode cut
    by the time limit is dropped: its next observation was never recorded, and bootstrapping
    from a wrong one would bias the critic.
    """
    from rlkit.lerobot.env_meta import load_env_config

    cols = load_demos(path, model, obs_key, action_key, ["next.reward", "episode_index"])
    obs, act = cols["obs"], cols["action"]
    horizon = (load_env_config(path) or env_config).max_episode_steps
    ep = cols["episode_index"]
    last = np.append(ep[1:] != ep[:-1], True)
    lengths = np.unique(ep, return_counts=True)[1]
    ep_len = np.repeat(lengths, lengths)  # LeRobot stores episodes contiguously, in order
    keep = ~(last & (ep_len >= horizon))
    next_obs = np.concatenate([obs[1:], obs[-1:]])[keep]
    obs, act, rew, last = obs[keep], act[keep], cols["next.reward"][keep], last[keep]
    buf = model.replay_buffer
    n_envs = buf.n_envs
    k = min(len(obs) // n_envs, buf.buffer_size - 1)
    m = k * n_envs

    def grid(x: np.ndarray) -> np.ndarray:
        return x[:m].reshape(k, n_envs, *x.shape[1:])

    buf.observations[:k] = grid(obs)
    buf.next_observations[:k] = grid(next_obs)
    buf.actions[:k] = grid(act)
    buf.rewards[:k] = grid(rew)
    buf.dones[:k] = grid(last.astype(np.float32))
    buf.timeouts[:k] = 0.0
    buf.pos, buf.full = k, False
    return m


# ------------------------------------------------------------------ training
def train_rl(
    cfg: RLConfig, *, argv: list[str] | None = None, progress: bool = True
) -> RLResult | SeedsResult:
    """Train (or resume) an SB3 agent; see :mod:`rlkit.rl` for the outputs. With ``seeds``
    one run per seed (:func:`rlkit.rl.seeds.train_seeds`)."""
    if cfg.seeds is not None:
        from rlkit.rl.seeds import train_seeds

        return train_seeds(cfg, argv=argv)
    cfg = cfg.for_seed()
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError as e:
            raise ImportError("--tensorboard needs TensorBoard: pip install tensorboard") from e
    bc_meta = read_export_meta(cfg.init_from) if cfg.init_from else None
    env_config = _env_config(cfg, bc_meta)
    device = str(resolve_device(cfg.device))
    run = RunDir(
        cfg.output, "rl", resume=cfg.resume, overwrite=cfg.overwrite, has_checkpoint=_has_checkpoint
    )
    with run:
        # the config is recorded once a checkpoint to resume is known to fit it (a refused
        # resume keeps the folder's own)
        done = run.start(cfg, section="rl", argv=argv, record=False)
        if done is not None:
            return from_json(RLResult, done)
        return _train(cfg, run, env_config, bc_meta, device, progress, argv)


def _train(
    cfg: RLConfig,
    run: RunDir,
    env_config: RacingConfig,
    bc_meta: dict[str, Any] | None,
    device: str,
    progress: bool,
    argv: list[str] | None = None,
) -> RLResult:
    out = run.path
    torch.set_num_threads(cfg.threads)
    env = make_vec_env(cfg, env_config)
    try:
        clock = WallClock()
        resumed = _resume(cfg, run, env, device) if run.resuming else None
        if resumed is not None:
            model, clock = resumed
        else:
            model = _new_model(cfg, env, bc_meta, env_config, device)
        run.record_config(cfg, section="rl", argv=argv)
        start_steps = model.num_timesteps
        t0 = time.perf_counter()
        if cfg.timesteps > start_steps:
            callbacks = _callbacks(cfg, run, model, env_config, clock, t0)
            _learn(cfg, model, callbacks, start_steps, resumed is None, progress)
            if cfg.checkpoint_every:
                # the final state: a kill while the outputs below are written resumes here
                save_checkpoint(run, model, clock, cfg.resume_settings)
        wall = time.perf_counter() - t0
        save_model_atomic(model, out / "final_model.zip")
    except BaseException:
        _abandon(env)
        raise
    env.close()
    result = RLResult(
        out, int(model.num_timesteps), wall, (model.num_timesteps - start_steps) / max(wall, 1e-9)
    )
    result.eval, payload = compare(model, env_config, cfg, out)
    result.policies = payload["policies"]
    write_learning_curve_png(out, result.eval)
    if cfg.video:
        write_video(model_driver(model), env_config, cfg.video, cfg.track_seed)
    run.finish(result, summary_text(result), complete=model.num_timesteps >= cfg.timesteps)
    return result


def _resume(
    cfg: RLConfig, run: RunDir, env: VecEnv, device: str
) -> tuple[BaseAlgorithm, WallClock] | None:
    """The model and wall clock of the newest checkpoint (None without one); the learning
    curve loses the evaluations after it."""
    ckpt = newest_checkpoint(run.path)
    if ckpt is None:
        return None
    done = json.loads((ckpt / "done").read_text())
    if done["algo"] != cfg.algo:
        raise ValueError(
            f"{ckpt}: checkpoint made by {done['algo'].upper()}, not {cfg.algo.upper()}; "
            f"resume with --algo {done['algo']} or start a new --output"
        )
    model = ALGOS[cfg.algo].load(str(ckpt / "model.zip"), env=env, device=device)
    # SB3 restores these from the checkpoint: a different value asked for would be ignored
    wanted = {"gamma": cfg.gamma, "batch_size": cfg.batch_size}
    if isinstance(model, PPO):
        wanted |= {"gae_lambda": cfg.gae_lambda, "target_kl": cfg.target_kl, "n_steps": cfg.n_steps}
    changed = [f"{k} {getattr(model, k)} (asked: {v})" for k, v in wanted.items()
               if getattr(model, k) != v]  # fmt: skip
    # and these the checkpoint recorded: a different value would change the run midway
    asked = cfg.resume_settings
    changed += [f"{k} {v} (asked: {asked[k]})" for k, v in done.get("settings", {}).items()
                if asked[k] != v]  # fmt: skip
    if changed:
        raise ValueError(
            f"{ckpt}: the checkpoint was trained with {', '.join(changed)}; resume with its "
            "settings or start a new --output"
        )
    kept = trim_csv(run.path / "learning_curve.csv", lambda r: int(r[0]) <= done["env_steps"])
    clock = WallClock(done.get("wall_s", 0.0))
    restore_best(run, ckpt)
    if isinstance(model, OffPolicyAlgorithm) and (ckpt / "replay_buffer.pkl").is_file():
        model.load_replay_buffer(str(ckpt / "replay_buffer.pkl"))
    run.saved = f"checkpoint at {model.num_timesteps:,} env steps"
    say(
        f"resuming {run.path} at {model.num_timesteps:,} env steps ({ckpt.name}); "
        f"learning_curve.csv keeps {kept} evaluations"
    )
    return model, clock


def _new_model(
    cfg: RLConfig,
    env: VecEnv,
    bc_meta: dict[str, Any] | None,
    env_config: RacingConfig,
    device: str,
) -> BaseAlgorithm:
    """A fresh model, warm-started: BC weights (--init-from), demos in the buffer (--demos)."""
    model = build_model(cfg, env, bc_meta, device)
    if cfg.init_from:
        load_bc_into(model, cfg.init_from)
    if cfg.demos and isinstance(model, OffPolicyAlgorithm):
        n = prefill_demos(model, cfg.demos, env_config, cfg.obs_key, cfg.action_key)
        logger.info("replay buffer pre-filled with %d demo transitions", n)
    return model


def _callbacks(
    cfg: RLConfig,
    run: RunDir,
    model: BaseAlgorithm,
    env_config: RacingConfig,
    clock: WallClock,
    t0: float,
) -> list[BaseCallback]:
    """The callbacks of ``learn``, in the order they run (the progress bar is added last)."""
    every = cfg.eval_every or cfg.timesteps
    callbacks: list[BaseCallback] = [
        EvalEvery(run.path, every, env_config, cfg.eval_episodes, cfg.track_seed, clock)
    ]
    if cfg.checkpoint_every:
        callbacks.append(CheckpointEvery(run, cfg.checkpoint_every, clock, cfg.resume_settings))
    if cfg.max_minutes:
        callbacks.append(WallClockLimit(t0, cfg.max_minutes * 60))
    if cfg.init_from and cfg.critic_warmup:
        callbacks.append(CriticWarmup(cfg.critic_warmup))
    if cfg.action_std:  # PPO's (resolved in RLConfig; refused with SAC/TD3)
        callbacks.append(StdSchedule(*cfg.action_std, cfg.timesteps))
    if cfg.demos and cfg.bc_weight > 0 and isinstance(model, OffPolicyAlgorithm):
        demo = load_demos(cfg.demos, model, cfg.obs_key, cfg.action_key)
        callbacks.append(BCRegulariser(demo["obs"], demo["action"], cfg.bc_weight, cfg.run_seed))
    return callbacks


def _learn(
    cfg: RLConfig,
    model: BaseAlgorithm,
    callbacks: list[BaseCallback],
    start_steps: int,
    fresh: bool,
    progress: bool,
) -> None:
    """``model.learn`` up to ``cfg.timesteps`` env steps; a diverged policy is an error."""
    evaluator = next((c for c in callbacks if isinstance(c, EvalEvery)), None)
    bar = ProgressBar(start_steps, cfg.timesteps, evaluator)
    try:
        model.learn(
            total_timesteps=cfg.timesteps - start_steps,
            callback=[*callbacks, bar] if progress else callbacks,
            reset_num_timesteps=fresh,
            tb_log_name=cfg.algo,
        )
    except ValueError as e:  # torch's distributions reject NaN parameters
        if _finite(model):
            raise
        raise ValueError(
            f"training diverged near {model.num_timesteps:,} env steps: the policy's "
            f"weights are not finite; lower --lr (now {cfg.lr}); the last checkpoint "
            "is kept"
        ) from e
    finally:
        if bar.bar is not None:  # SB3 skips _on_training_end when learn() raises
            bar.bar.close()
    if not _finite(model):
        raise ValueError(
            f"training diverged: the policy's weights are not finite after "
            f"{model.num_timesteps:,} env steps; lower --lr (now {cfg.lr})"
        )


# ------------------------------------------------------------------ evaluation
def compare(
    model: BaseAlgorithm, env_config: RacingConfig, cfg: RLConfig, out: Path
) -> tuple[dict[str, EvalResult], dict[str, Any]]:
    """The final policy, the selected one (``best_model.zip``, best on the validation
    tracks), BC and the expert on the same *test* tracks -> ``eval.json``.

    Returns:
        The rows and the ``eval.json`` payload (which also labels the two RL policies and
        holds the expert on the validation tracks, what the learning curve compares with).
    """
    drivers = {"rl_final": model_driver(model)}
    policies = {"rl_final": {"model": "final_model.zip", "env_steps": int(model.num_timesteps)}}
    best_path = out / BEST_MODEL
    if best_path.is_file():
        best = ALGOS[cfg.algo].load(str(best_path), device="cpu")
        drivers["rl_selected"] = model_driver(best)
        policies["rl_selected"] = {
            "model": BEST_MODEL,
            "env_steps": int(best.num_timesteps),
            "selected_by": f"best mean return on {cfg.eval_episodes} validation tracks",
        }
    if cfg.init_from:
        drivers["bc"] = policy_driver(BCPolicy.load(Path(cfg.init_from) / "bc_policy.pt"))
    drivers["expert"] = expert_driver()
    rows = evaluate_drivers(drivers, env_config, cfg.test_episodes, cfg.track_seed, stream="test")
    payload = eval_payload(rows, cfg.test_episodes, cfg.track_seed, stream="test")
    payload["policies"] = policies
    val_expert = evaluate(
        expert_driver(), env_config, cfg.eval_episodes, cfg.track_seed, stream="val"
    )
    payload["validation"] = {
        "seed_stream": "val",
        "episodes": cfg.eval_episodes,
        "expert": val_expert.to_dict(),
    }
    write_json_atomic(out / "eval.json", payload)
    return rows, payload


def eval_only(cfg: RLConfig) -> dict[str, EvalResult]:
    """``--eval-only MODEL``: evaluate a saved model (algorithm from --algo).

    With ``--render human`` the policy first drives the ``--test-episodes`` test
    tracks live in a pygame window, in real time (the same tracks and start states as the
    table: episode i is ``RacingEnv`` seeded with ``episode_seed(seed, i, "test")``, like car
    i of :func:`~rlkit.rollout.evaluate`). Closing the window skips to the table.
    """
    cfg = cfg.for_seed()
    path = Path(cfg.eval_only or "")
    if not path.is_file():
        raise FileNotFoundError(f"--eval-only {path}: no such model file")
    bc_meta = read_export_meta(cfg.init_from) if cfg.init_from else None
    env_config = _env_config(cfg, bc_meta)
    try:
        model = ALGOS[cfg.algo].load(str(path), device="cpu")
    except Exception as e:  # SB3 raises many kinds for a wrong/corrupt file
        raise ValueError(
            f"{path}: not a saved {cfg.algo.upper()} model ({type(e).__name__}: {e}); "
            "pass the matching --algo"
        ) from e
    if cfg.render == "human":
        _watch(model, env_config, cfg.test_episodes, cfg.track_seed)
    drivers = {"rl": model_driver(model), "expert": expert_driver()}
    rows = evaluate_drivers(drivers, env_config, cfg.test_episodes, cfg.track_seed)
    if cfg.video:
        write_video(model_driver(model), env_config, cfg.video, cfg.track_seed)
    return rows


def _watch(model: BaseAlgorithm, env_config: RacingConfig, episodes: int, seed: int) -> None:
    """The evaluation episodes live in a pygame window (a real-time ``RacingEnv``, not the
    batched rollout) until they end or the window is closed."""
    from rlkit.utils import episode_seed

    env = RacingEnv(render_mode="human", config=env_config)
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=episode_seed(seed, i, "test"))  # opens the window
            done = False
            while not done and env.window is not None and env.window.is_open:
                action, _ = model.predict(obs, deterministic=True)
                obs, _, terminated, truncated, _ = env.step(action)
                done = terminated or truncated
            if env.window is None or not env.window.is_open:
                break  # the user closed the window
    finally:
        env.close()


def summary_text(result: RLResult) -> str:
    lines = [
        f"  output          {result.output}",
        f"  env steps       {result.timesteps:,}  "
        f"({result.steps_per_s:,.0f} env-steps/s, {result.wall_s:.1f} s)",
        "",
        f"On {next(iter(result.eval.values())).episodes} test tracks (never used for "
        "training or selection):",
        format_eval_table(label_policies(result.eval, result.policies)),
    ]
    return "\n".join(lines)
