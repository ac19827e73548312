"""Behaviour cloning from a LeRobot dataset, with DAgger, evaluation and SB3 export.

Data flow::

    LeRobot dataset (v2.x / v3.0) --load_columns--> obs (N, D), action (N, A)
        split by episode into train / val
        normalisation: obs mean/std from meta/stats.json; actions scaled to [-1, 1] by the
        env's action bounds (rlkit data) or the dataset's min/max
    -> loader: "memory" (tensors on the device, shuffled index batches) or a torch DataLoader
       (num_workers, pin_memory, persistent_workers) over a batched Dataset
    -> MLP (BCPolicy), MSE on normalised actions, Adam; early stopping on validation loss
    -> DAgger rounds: drive the policy, label visited states with the expert, retrain
    -> eval on held-out tracks (policy and expert, same tracks), SB3 exports for RL

Output folder::

    bc_policy.pt          best policy (BCPolicy.load)
    policy_{ppo,sac,td3}.zip + bc_export.json   SB3 models with the BC weights (PPO.load, ...),
                          for train_rl.py --init-from
    checkpoint.pt         latest training state (--resume)
    train_log.csv         epoch, phase, train/val loss, seconds
    eval.json             policy and expert on the same held-out tracks
    dagger/               aggregated DAgger data (LeRobot v3.0), if --dagger-rounds > 0
    config.resolved.yml, command.txt

Modules: :mod:`~rlkit.bc.config` (``BCConfig``), :mod:`~rlkit.bc.data` (``load_bc_data``,
the split by episode, the loaders) and :mod:`~rlkit.bc.train` (``train_bc``, DAgger, the
summary). The policy and its SB3 exports: :mod:`rlkit.policy`.
"""

from rlkit.bc.config import BCConfig
from rlkit.bc.data import (
    MEMORY_LIMIT_BYTES,
    Batches,
    BCData,
    load_bc_data,
    resolve_loader,
    split_episodes,
)
from rlkit.bc.train import LOG_HEADER, BCResult, dagger_round, summary_text, train_bc

__all__ = [
    "LOG_HEADER",
    "MEMORY_LIMIT_BYTES",
    "BCConfig",
    "BCData",
    "BCResult",
    "Batches",
    "dagger_round",
    "load_bc_data",
    "resolve_loader",
    "split_episodes",
    "summary_text",
    "train_bc",
]
