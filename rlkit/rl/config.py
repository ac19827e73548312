"""Options of ``train_rl.py`` (section ``rl`` of config.yml) and the algorithms it trains."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from rlkit.cluster import check_executor
from rlkit.config.fields import check_fields, opt
from rlkit.rollout import ACTION_KEY, OBS_KEY
from rlkit.utils import WORKER_RULES, default_workers

ALGOS: dict[str, type[BaseAlgorithm]] = {"sac": SAC, "ppo": PPO, "td3": TD3}
#: PPO's default discount: at 0.99 (a ~5 s horizon) leaving the track costs the policy
#: little against lapping faster, and across 5 seeds 2 final policies left the track on 20 and
#: 80 % of the test tracks; at 0.999 none did (docs/rl.md, bench/bench_rl.py --seeds 5)
PPO_GAMMA = 0.999
#: PPO's defaults for a final policy that is fast and stays on the track (docs/rl.md): training
#: cars leave the road 1 m inside its edge, the exploration std is annealed from 0.4 to 0.05,
#: over 1M env steps. SAC/TD3 train at the road's edge, for 500k steps.
PPO_EDGE = 0.8
PPO_ACTION_STD = (0.4, 0.05)
PPO_TIMESTEPS = 1_000_000
BATCHED_CARS = 16  # default car count of --vec batched (bench/bench_rl.py)


#: Settings only PPO reads: given with SAC or TD3 they are an error, not silently ignored.
PPO_ONLY = ("action_std", "learn_std", "target_kl", "gae_lambda", "n_steps")


@dataclass
class RLConfig:
    """Options of ``train_rl.py`` (section ``rl`` of config.yml)."""

    algo: Literal["sac", "ppo", "td3"] = opt(
        "ppo", "SB3 algorithm (PPO: measured fastest to the expert, bench/bench_rl.py)"
    )
    vec: Literal["batched", "subproc", "dummy"] = opt(
        "batched", "batched: RacingVecEnv in one process; subproc/dummy: SB3 vec envs"
    )
    envs: int | None = opt(
        None,
        f"parallel envs (default: batched 16 cars; subproc/dummy: {WORKER_RULES['rl'][0]})",
        bounds="[1, 4096]",
    )
    timesteps: int | None = opt(
        None,
        "environment steps to train (default 1,000,000 for PPO, 500,000 for SAC/TD3)",
        bounds="[1, 1e10]",
    )
    batch_size: int = opt(256, "SGD minibatch size", bounds="[1, 2^20]")
    lr: float = opt(3e-4, "learning rate", bounds="[1e-10, 1]")
    lr_schedule: Literal["constant", "linear"] = opt(
        "linear",
        "learning rate over training: linear decay to 0 at --timesteps (steadies "
        "the final policy: docs/rl.md), or constant",
    )
    gamma: float | None = opt(
        None,
        "discount factor, the weight of the future (of staying on the track): "
        "default 0.999 for PPO (a final policy that does not leave the track: docs/rl.md), "
        "0.99 for SAC/TD3",
        bounds="[0, 1]",
    )
    train_edge: float | None = opt(
        None,
        "where a training car leaves the road, as a fraction of the half-width: "
        "default 0.8 for PPO (a 1 m margin the policy learns to keep, so the final "
        "policy stays on the track: docs/rl.md), 1 for SAC/TD3; evaluation always uses "
        "the whole road",
        bounds="[0.01, 1]",
    )
    action_std: list[float] | None = opt(
        None,
        "PPO: the exploration std, annealed linearly from the first value to the "
        "second over --timesteps (default 0.4 0.05: it finds the fast way round in every "
        "seed, docs/rl.md)",
        nargs=2,
        bounds="(0, 1]",
    )
    learn_std: bool = opt(
        False,
        "PPO: learn the exploration std by gradient (SB3's default) instead of "
        "annealing it as --action-std",
    )
    target_kl: float | None = opt(
        None,
        "PPO: stop a rollout's epochs once the approximate KL passes this",
        bounds="[1e-6, 100]",
    )
    gae_lambda: float = opt(0.95, "PPO: GAE's lambda, how far the advantages look ahead before "
                  "trusting the value head (1: the whole rollout)", bounds="[0, 1]")  # fmt: skip
    gradient_steps: int | None = opt(
        None, "off-policy: gradient steps per update (default: one per env step)", bounds="[1, 1e6]"
    )
    train_freq: int = opt(1, "off-policy: update every this many vector steps", bounds="[1, 1e6]")
    buffer_size: int = opt(300_000, "off-policy replay buffer size", bounds="[1, 1e8]")
    learning_starts: int | None = opt(
        None,
        "env steps before updates (default: 0 with --init-from, else 5000)",
        bounds="[0, 1e10]",
    )
    n_steps: int = opt(256, "PPO: steps per env per rollout", bounds="[2, 1e6]")
    critic_warmup: int = opt(
        5000,
        "with --init-from: env steps with the actor frozen while critics learn",
        bounds="[0, 1e10]",
    )
    init_from: str | None = opt(None, "train_bc.py output folder to warm-start the actor from")
    demos: str | None = opt(None, "LeRobot demonstrations to pre-fill the replay buffer")
    obs_key: str = opt(OBS_KEY, "--demos: observation feature (as train_bc.py)")
    action_key: str = opt(ACTION_KEY, "--demos: action feature (as train_bc.py)")
    bc_weight: float = opt(
        10.0,
        "SAC/TD3 with --demos: weight of a BC loss on demo actions in every actor update (0: off)",
        bounds="[0, 1e6]",
    )
    seed: int | None = opt(
        None,
        "training seed: envs, networks, exploration (default 0; not with --seeds)",
        bounds="[0, 2^32)",
    )
    seeds: list[int] | None = opt(
        None,
        "train one run per seed, in parallel processes, into OUTPUT/seed_<s>/, and "
        "write their aggregate (mean, IQM, 95% bootstrap CI)",
        bounds="[0, 2^32)",
    )
    parallel: int | None = opt(
        None, "--seeds: runs at once (default: one per core, as memory allows)", bounds="[1, 4096]"
    )
    executor: Literal["local", "ray"] = opt(
        "local",
        "--seeds: local: child processes on this machine; ray: each seed a Ray "
        "task on any node of the cluster, its outputs copied back here (pip install "
        "'rlkit[ray]')",
    )
    ray_address: str | None = opt(
        None,
        "--executor ray: the cluster to join (host:port, or auto); default "
        "RAY_ADDRESS, else a Ray instance on this machine",
    )
    track_seed: int = opt(
        0,
        "seed of the validation and test tracks: every training seed, BC and the "
        "expert drive the same ones",
        bounds="[0, 2^32)",
    )
    output: str = opt("runs/rl", "output folder")
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "device")
    threads: int = opt(
        1, "torch CPU threads (1: measured fastest for these MLPs)", bounds="[1, 1024]"
    )
    checkpoint_every: int = opt(
        50_000, "env steps between checkpoints (0: none)", bounds="[0, 1e10]"
    )
    eval_every: int = opt(25_000, "env steps between evaluations", bounds="[0, 1e10]")
    eval_episodes: int = opt(
        20,
        "validation tracks per evaluation during training (the best on them is "
        "kept as best_model.zip)",
        bounds="[1, 100000]",
    )
    test_episodes: int = opt(
        50,
        "test tracks of the final report (final and selected policy, BC, expert; "
        "never used for selection)",
        bounds="[1, 100000]",
    )
    tensorboard: str | None = opt(None, "TensorBoard log folder (needs pip install tensorboard)")
    resume: bool = opt(False, "continue from the newest checkpoint")
    overwrite: bool = opt(False, "replace an existing --output run")
    eval_only: str | None = opt(None, "evaluate this saved model (.zip) and exit")
    video: str | None = opt(None, "write a top-down video of the policy (.gif or .mp4)")
    render: Literal["none", "human"] = opt(
        "none",
        "human: watch the --eval-only episodes live in a window (needs pygame and a display)",
    )
    max_episode_steps: int = opt(1000, "episode length in steps", bounds="[1, 1e6]")
    max_minutes: float | None = opt(
        None,
        "wall-clock budget: stop after this many minutes, then evaluate and save",
        bounds="[1e-3, 1e6]",
    )

    def __post_init__(self) -> None:
        # the per-algorithm defaults, resolved here so config.resolved.yml records the values
        # the run used (a later rlkit with other defaults resumes and repeats it exactly)
        ppo = self.algo == "ppo"
        if self.timesteps is None:
            self.timesteps = PPO_TIMESTEPS if ppo else 500_000
        if self.gamma is None:
            self.gamma = PPO_GAMMA if ppo else 0.99
        if self.train_edge is None:
            self.train_edge = PPO_EDGE if ppo else 1.0
        if self.action_std is None and ppo and not self.learn_std:
            self.action_std = list(PPO_ACTION_STD)
        check_fields(self)
        ppo_only = [
            f"--{f.name.replace('_', '-')}"
            for f in dataclasses.fields(self)
            if f.name in PPO_ONLY and getattr(self, f.name) != f.default
        ]
        them = "them" if len(ppo_only) > 1 else "it"
        if self.algo != "ppo" and ppo_only:
            raise ValueError(
                f"only PPO reads {', '.join(ppo_only)}; --algo {self.algo} would ignore {them}: "
                f"drop {them} or pass --algo ppo"
            )
        if self.resume and self.overwrite:
            raise ValueError("pass either --resume or --overwrite, not both")
        if self.seeds is not None and self.seed is not None:
            raise ValueError(
                f"pass either --seed or --seeds, not both (seed {self.seed}, seeds {self.seeds})"
            )
        if self.learn_std and self.action_std:
            raise ValueError(
                "--learn-std learns the exploration std, --action-std anneals it: pass one"
            )
        if self.action_std is not None and len(self.action_std) != 2:
            raise ValueError(f"action_std must be two values in (0, 1], got {self.action_std}")
        if self.seeds is not None and not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds has duplicates: {self.seeds}; each seed once")
        if self.seeds is not None and (self.eval_only or self.render != "none"):
            raise ValueError(
                "--seeds trains; --eval-only/--render evaluate one model: pass one of them"
            )
        if self.executor != "local" and self.seeds is None:
            raise ValueError("--executor ray runs the seeds of --seeds on a cluster; pass --seeds")
        if self.video is not None and not self.video.endswith((".gif", ".mp4")):
            raise ValueError(f"video must end in .gif or .mp4, got {self.video!r}")
        if self.render != "none" and self.eval_only is None:
            raise ValueError(
                f"render {self.render!r} only works with --eval-only MODEL (training does not "
                "render); pass --eval-only or --render none"
            )
        check_executor(self.executor)

    @property
    def resume_settings(self) -> dict[str, Any]:
        """Training settings a checkpoint records and a resume must repeat (SB3 saves the
        others): where training cars leave the road, the exploration std schedule."""
        return {"train_edge": self.train_edge, "action_std": self.action_std}

    @property
    def run_seed(self) -> int:
        """The training seed of one run: ``--seed``, else 0."""
        return 0 if self.seed is None else self.seed

    def for_seed(self, seed: int | None = None) -> RLConfig:
        """One run's options: ``seed`` (default :attr:`run_seed`), without ``--seeds``."""
        seed = self.run_seed if seed is None else seed
        return dataclasses.replace(
            self, seed=seed, seeds=None, parallel=None, executor="local", ray_address=None
        )

    @property
    def num_envs(self) -> int:
        if self.envs is not None:
            return self.envs
        # One process steps all cars as arrays, so the car count is not bound to the cores.
        return BATCHED_CARS if self.vec == "batched" else default_workers("rl")
