"""RL fine-tuning with Stable-Baselines3 on the racing env, warm-started from BC.

Pipeline::

    env   --vec batched : RacingVecEnv(N cars, one process)          (default)
          --vec subproc : SubprocVecEnv of N RacingEnv processes     (the seeds' setup)
          --vec dummy   : DummyVecEnv of N RacingEnv
    model SAC | PPO | TD3 ("MlpPolicy"), network as the BC export when --init-from is given
    warm start: BC actor weights + small std (--init-from), demonstrations in the replay
          buffer (--demos, features --obs-key/--action-key as in train_bc.py), critic
          warm-up with the actor frozen (--critic-warmup steps),
          SAC/TD3: a BC loss on the demonstrations in every actor update (--bc-weight)
    learn: callbacks count *environment* steps (not vector steps):
          checkpoints (model + replay buffer, atomic, newest kept), evaluation on held-out
          tracks (best model kept), TensorBoard (--tensorboard), progress bar
    outputs: eval.json (RL vs BC vs expert on the same tracks), learning_curve.csv/.png,
          final_model.zip, best_model.zip, checkpoints/, config.resolved.yml, command.txt

A run killed at any moment (even SIGKILL) resumes with ``--resume`` from its newest
complete checkpoint: every file is written under a temporary name and renamed, and a
checkpoint only counts once its ``done`` marker exists.

Modules: :mod:`~rlkit.rl.config` (``RLConfig``, the algorithms), :mod:`~rlkit.rl.callbacks`
(checkpoints, evaluation, critic warm-up, BC loss, progress, wall clock) and
:mod:`~rlkit.rl.train` (``train_rl``, demonstrations for the buffer and the BC loss,
``eval_only``). Tables, plots and videos: :mod:`rlkit.report`.
"""

from rlkit.rl.callbacks import BCRegulariser, evaluate_model, newest_checkpoint
from rlkit.rl.config import ALGOS, BATCHED_CARS, RLConfig
from rlkit.rl.train import (
    RLResult,
    build_model,
    compare,
    eval_only,
    load_demos,
    make_vec_env,
    prefill_demos,
    summary_text,
    train_rl,
)

__all__ = [
    "ALGOS",
    "BATCHED_CARS",
    "BCRegulariser",
    "RLConfig",
    "RLResult",
    "build_model",
    "compare",
    "eval_only",
    "evaluate_model",
    "load_demos",
    "make_vec_env",
    "newest_checkpoint",
    "prefill_demos",
    "summary_text",
    "train_rl",
]
