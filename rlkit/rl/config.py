"""Options of ``train_rl.py`` (section ``rl`` of config.yml) and the algorithms it trains."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from rlkit.cluster import check_executor
from rlkit.rollout import ACTION_KEY, OBS_KEY
from rlkit.utils import WORKER_RULES, check_ranges, default_workers

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

    algo: Literal["sac", "ppo", "td3"] = field(
        default="ppo",
        metadata={"help": "SB3 algorithm (PPO: measured fastest to the expert, bench/bench_rl.py)"},
    )
    vec: Literal["batched", "subproc", "dummy"] = field(
        default="batched",
        metadata={"help": "batched: RacingVecEnv in one process; subproc/dummy: SB3 vec envs"},
    )
    envs: int | None = field(
        default=None,
        metadata={
            "help": "parallel envs (default: batched 16 cars; subproc/dummy: "
            f"{WORKER_RULES['rl'][0]})"
        },
    )
    timesteps: int | None = field(
        default=None,
        metadata={
            "help": "environment steps to train (default 1,000,000 for PPO, 500,000 for SAC/TD3)"
        },
    )
    batch_size: int = field(default=256, metadata={"help": "SGD minibatch size"})
    lr: float = field(default=3e-4, metadata={"help": "learning rate"})
    lr_schedule: Literal["constant", "linear"] = field(
        default="linear",
        metadata={
            "help": "learning rate over training: linear decay to 0 at --timesteps (steadies "
            "the final policy: docs/rl.md), or constant"
        },
    )
    gamma: float | None = field(
        default=None,
        metadata={
            "help": "discount factor, the weight of the future (of staying on the track): "
            "default 0.999 for PPO (a final policy that does not leave the track: docs/rl.md), "
            "0.99 for SAC/TD3"
        },
    )
    train_edge: float | None = field(
        default=None,
        metadata={
            "help": "where a training car leaves the road, as a fraction of the half-width: "
            "default 0.8 for PPO (a 1 m margin the policy learns to keep, so the final "
            "policy stays on the track: docs/rl.md), 1 for SAC/TD3; evaluation always uses "
            "the whole road"
        },
    )
    action_std: list[float] | None = field(
        default=None,
        metadata={
            "help": "PPO: the exploration std, annealed linearly from the first value to the "
            "second over --timesteps (default 0.4 0.05: it finds the fast way round in every "
            "seed, docs/rl.md)",
            "nargs": 2,
        },
    )
    learn_std: bool = field(
        default=False,
        metadata={
            "help": "PPO: learn the exploration std by gradient (SB3's default) instead of "
            "annealing it as --action-std"
        },
    )
    target_kl: float | None = field(
        default=None,
        metadata={"help": "PPO: stop a rollout's epochs once the approximate KL passes this"},
    )
    gae_lambda: float = field(
        default=0.95,
        metadata={"help": "PPO: GAE's lambda, how far the advantages look ahead before "
                  "trusting the value head (1: the whole rollout)"},
    )  # fmt: skip
    gradient_steps: int | None = field(
        default=None,
        metadata={"help": "off-policy: gradient steps per update (default: one per env step)"},
    )
    train_freq: int = field(
        default=1, metadata={"help": "off-policy: update every this many vector steps"}
    )
    buffer_size: int = field(default=300_000, metadata={"help": "off-policy replay buffer size"})
    learning_starts: int | None = field(
        default=None,
        metadata={"help": "env steps before updates (default: 0 with --init-from, else 5000)"},
    )
    n_steps: int = field(default=256, metadata={"help": "PPO: steps per env per rollout"})
    critic_warmup: int = field(
        default=5000,
        metadata={"help": "with --init-from: env steps with the actor frozen while critics learn"},
    )
    init_from: str | None = field(
        default=None, metadata={"help": "train_bc.py output folder to warm-start the actor from"}
    )
    demos: str | None = field(
        default=None, metadata={"help": "LeRobot demonstrations to pre-fill the replay buffer"}
    )
    obs_key: str = field(
        default=OBS_KEY, metadata={"help": "--demos: observation feature (as train_bc.py)"}
    )
    action_key: str = field(
        default=ACTION_KEY, metadata={"help": "--demos: action feature (as train_bc.py)"}
    )
    bc_weight: float = field(
        default=10.0,
        metadata={
            "help": "SAC/TD3 with --demos: weight of a BC loss on demo actions in every actor "
            "update (0: off)"
        },
    )
    seed: int | None = field(
        default=None,
        metadata={
            "help": "training seed: envs, networks, exploration (default 0; not with --seeds)"
        },
    )
    seeds: list[int] | None = field(
        default=None,
        metadata={
            "help": "train one run per seed, in parallel processes, into OUTPUT/seed_<s>/, and "
            "write their aggregate (mean, IQM, 95% bootstrap CI)"
        },
    )
    parallel: int | None = field(
        default=None,
        metadata={"help": "--seeds: runs at once (default: one per core, as memory allows)"},
    )
    executor: Literal["local", "ray"] = field(
        default="local",
        metadata={
            "help": "--seeds: local: child processes on this machine; ray: each seed a Ray "
            "task on any node of the cluster, its outputs copied back here (pip install "
            "'rlkit[ray]')"
        },
    )
    ray_address: str | None = field(
        default=None,
        metadata={
            "help": "--executor ray: the cluster to join (host:port, or auto); default "
            "RAY_ADDRESS, else a Ray instance on this machine"
        },
    )
    track_seed: int = field(
        default=0,
        metadata={
            "help": "seed of the validation and test tracks: every training seed, BC and the "
            "expert drive the same ones"
        },
    )
    output: str = field(default="runs/rl", metadata={"help": "output folder"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "device"})
    threads: int = field(
        default=1, metadata={"help": "torch CPU threads (1: measured fastest for these MLPs)"}
    )
    checkpoint_every: int = field(
        default=50_000, metadata={"help": "env steps between checkpoints (0: none)"}
    )
    eval_every: int = field(default=25_000, metadata={"help": "env steps between evaluations"})
    eval_episodes: int = field(
        default=20,
        metadata={
            "help": "validation tracks per evaluation during training (the best on them is "
            "kept as best_model.zip)"
        },
    )
    test_episodes: int = field(
        default=50,
        metadata={
            "help": "test tracks of the final report (final and selected policy, BC, expert; "
            "never used for selection)"
        },
    )
    tensorboard: str | None = field(
        default=None, metadata={"help": "TensorBoard log folder (needs pip install tensorboard)"}
    )
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --output run"})
    eval_only: str | None = field(
        default=None, metadata={"help": "evaluate this saved model (.zip) and exit"}
    )
    video: str | None = field(
        default=None, metadata={"help": "write a top-down video of the policy (.gif or .mp4)"}
    )
    render: Literal["none", "human"] = field(
        default="none",
        metadata={
            "help": "human: watch the --eval-only episodes live in a window (needs pygame "
            "and a display)"
        },
    )
    max_episode_steps: int = field(default=1000, metadata={"help": "episode length in steps"})
    max_minutes: float | None = field(
        default=None,
        metadata={
            "help": "wall-clock budget: stop after this many minutes, then evaluate and save"
        },
    )

    def __post_init__(self) -> None:
        if self.timesteps is None:
            self.timesteps = PPO_TIMESTEPS if self.algo == "ppo" else 500_000
        ppo_only = [
            f"--{f.name.replace('_', '-')}"
            for f in dataclasses.fields(self)
            if f.name in PPO_ONLY and getattr(self, f.name) != f.default
        ]
        them = "them" if len(ppo_only) > 1 else "it"
        checks = [
            (
                self.algo == "ppo" or not ppo_only,
                f"only PPO reads {', '.join(ppo_only)}; --algo {self.algo} would ignore {them}: "
                f"drop {them} or pass --algo ppo",
            ),
            (self.envs is None or self.envs >= 1, f"envs must be >= 1, got {self.envs}"),
            (self.timesteps >= 1, f"timesteps must be >= 1, got {self.timesteps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.train_freq >= 1, f"train_freq must be >= 1, got {self.train_freq}"),
            (
                self.checkpoint_every >= 0,
                f"checkpoint_every must be >= 0, got {self.checkpoint_every}",
            ),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.eval_episodes >= 1, f"eval_episodes must be >= 1, got {self.eval_episodes}"),
            (self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            (self.critic_warmup >= 0, f"critic_warmup must be >= 0, got {self.critic_warmup}"),
            (not (self.resume and self.overwrite), "pass either --resume or --overwrite, not both"),
            (
                self.seeds is None or self.seed is None,
                f"pass either --seed or --seeds, not both (seed {self.seed}, seeds {self.seeds})",
            ),
            (
                not (self.learn_std and self.action_std),
                "--learn-std learns the exploration std, --action-std anneals it: pass one",
            ),
            (
                self.action_std is None
                or (len(self.action_std) == 2 and all(0 < x <= 1 for x in self.action_std)),
                f"action_std must be two values in (0, 1], got {self.action_std}",
            ),
            (self.seeds is None or len(self.seeds) >= 1, "--seeds needs at least one seed"),
            (
                self.seeds is None or len(set(self.seeds)) == len(self.seeds),
                f"--seeds has duplicates: {self.seeds}; each seed once",
            ),
            (
                self.seeds is None or all(0 <= s < 2**32 for s in self.seeds),
                f"--seeds must be in [0, 4294967295], got {self.seeds}",
            ),
            (
                self.seeds is None or not (self.eval_only or self.render != "none"),
                "--seeds trains; --eval-only/--render evaluate one model: pass one of them",
            ),
            (
                self.executor == "local" or self.seeds is not None,
                "--executor ray runs the seeds of --seeds on a cluster; pass --seeds",
            ),
            (
                self.max_minutes is None or self.max_minutes > 0,
                f"max_minutes must be > 0, got {self.max_minutes}",
            ),
            (
                self.video is None or self.video.endswith((".gif", ".mp4")),
                f"video must end in .gif or .mp4, got {self.video!r}",
            ),
            (
                self.render == "none" or self.eval_only is not None,
                f"render {self.render!r} only works with --eval-only MODEL "
                "(training does not render); pass --eval-only or --render none",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        check_executor(self.executor)
        # upper bounds: a typo (1e20) is an error, not an allocation the kernel kills
        check_ranges(
            self,
            {
                "envs": (1, 4096),
                "timesteps": (1, 1e10),
                "batch_size": (1, 2**20),
                "lr": (1e-10, 1),
                "target_kl": (1e-6, 100),
                "gae_lambda": (0, 1),
                "gamma": (0, 1),
                "train_edge": (0.01, 1),
                "gradient_steps": (1, 1e6),
                "train_freq": (1, 1e6),
                "buffer_size": (1, 1e8),
                "learning_starts": (0, 1e10),
                "n_steps": (2, 1e6),
                "critic_warmup": (0, 1e10),
                "bc_weight": (0, 1e6),
                "seed": (0, 2**32 - 1),
                "parallel": (1, 4096),
                "track_seed": (0, 2**32 - 1),
                "threads": (1, 1024),
                "checkpoint_every": (0, 1e10),
                "eval_every": (0, 1e10),
                "eval_episodes": (1, 100_000),
                "test_episodes": (1, 100_000),
                "max_episode_steps": (1, 1e6),
                "max_minutes": (1e-3, 1e6),
            },
        )

    @property
    def discount(self) -> float:
        """``--gamma``, else the algorithm's default (PPO 0.999, SAC/TD3 0.99)."""
        if self.gamma is not None:
            return self.gamma
        return PPO_GAMMA if self.algo == "ppo" else 0.99

    @property
    def std_schedule(self) -> tuple[float, float] | None:
        """PPO's exploration std from start to end (None: learned; SAC/TD3: always None)."""
        if self.algo != "ppo" or self.learn_std:
            return None
        return tuple(self.action_std) if self.action_std else PPO_ACTION_STD

    @property
    def edge(self) -> float:
        """``--train-edge``, else the algorithm's default (PPO 0.8, SAC/TD3 1)."""
        if self.train_edge is not None:
            return self.train_edge
        return PPO_EDGE if self.algo == "ppo" else 1.0

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
