"""train_bc's SB3 exports are real SB3 model files: ``PPO.load`` / ``SAC.load`` / ``TD3.load``
open them and act like the BC policy; RL's warm start still reads them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3 import PPO, SAC, TD3

from rlkit.bc import BCConfig, train_bc
from rlkit.collect import CollectConfig, collect
from rlkit.envs import RacingEnv
from rlkit.envs.racing import make_observation_space
from rlkit.lerobot import DatasetReader
from rlkit.lerobot.env_meta import load_env_config
from rlkit.policy import (
    BCPolicy,
    build_policy_kwargs,
    export_sb3,
    load_bc_into,
    policy_kwargs_for,
    read_export_meta,
)

CLASSES = {"ppo": PPO, "sac": SAC, "td3": TD3}


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    demos = root / "demos"
    collect(CollectConfig(episodes=3, workers=1, max_steps=80, output=str(demos)), progress=False)
    out = root / "bc"
    cfg = BCConfig(data=str(demos), output=str(out), epochs=2, hidden=[32, 32], eval_episodes=0)
    train_bc(cfg, progress=False)
    obs = DatasetReader(demos).load_columns(["observation.state"])["observation.state"][::5]
    return demos, out, np.ascontiguousarray(obs, dtype=np.float32)


@pytest.mark.parametrize("algo", ["ppo", "sac", "td3"])
def test_export_opens_with_sb3_load_and_acts_like_the_bc_policy(bc_run, algo):
    demos, out, obs = bc_run
    model = CLASSES[algo].load(out / f"policy_{algo}.zip", device="cpu")
    assert type(model) is CLASSES[algo]
    # The spaces travel inside the file: the racing observation and SB3's [-1, 1] actions.
    assert model.observation_space == make_observation_space(load_env_config(demos))
    assert model.action_space == spaces.Box(-1.0, 1.0, (2,), np.float32)
    policy = BCPolicy.load(out / "bc_policy.pt")
    actions, _ = model.predict(obs, deterministic=True)
    assert len(obs) >= 40 and np.ptp(actions) > 0.01  # real, varied observations
    np.testing.assert_allclose(actions, policy.act(obs), atol=1e-5)


def test_export_metadata_describes_the_model_files(bc_run):
    _, out, _ = bc_run
    meta = read_export_meta(out)
    assert meta["format"] == "rlkit-bc-export-v2"
    assert meta["files"] == {a: f"policy_{a}.zip" for a in ("ppo", "sac", "td3")}
    assert meta["load_with"]["sac"] == "stable_baselines3.SAC.load"
    assert meta["stable_baselines3"]
    assert json.loads((out / "bc_export.json").read_text()) == meta
    leftovers = [p.name for p in out.iterdir() if ".tmp-" in p.name]
    assert leftovers == []  # every file renamed into place


def test_warm_start_into_a_model_with_its_own_settings(bc_run):
    """load_bc_into copies only the weights: the RL model keeps its own hyperparameters."""
    _, out, obs = bc_run
    meta = read_export_meta(out)
    model = SAC(
        "MlpPolicy",
        RacingEnv(),
        policy_kwargs=build_policy_kwargs(meta["policy_kwargs"]["sac"]),
        buffer_size=500,
        learning_starts=0,
        device="cpu",
        seed=1,
    )
    load_bc_into(model, out)
    assert model.buffer_size == 500
    actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, BCPolicy.load(out / "bc_policy.pt").act(obs), atol=1e-5)


def test_old_v1_exports_still_warm_start(tmp_path):
    """Runs made before the full-model export (SB3 policy files, format v1) stay usable."""
    from stable_baselines3.td3.policies import TD3Policy

    policy = BCPolicy(21, 2, [16, 16], obs_mean=np.full(21, 0.5), obs_std=np.full(21, 2.0))
    kwargs = policy_kwargs_for("td3", [16, 16], 2, 0.1)
    obs_space = RacingEnv().observation_space
    act_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    v1 = TD3Policy(obs_space, act_space, lambda _: 3e-4, **build_policy_kwargs(kwargs))
    v1.actor.mu.load_state_dict(policy.folded_net().state_dict())
    v1.save(str(tmp_path / "policy_td3.zip"))
    meta = {"format": "rlkit-bc-export-v1", "obs_dim": 21, "act_dim": 2}
    meta |= {"files": {"td3": "policy_td3.zip"}, "policy_kwargs": {"td3": kwargs}}
    (tmp_path / "bc_export.json").write_text(json.dumps(meta))

    model = TD3("MlpPolicy", RacingEnv(), policy_kwargs=build_policy_kwargs(kwargs), device="cpu")
    load_bc_into(model, tmp_path)
    obs = np.random.default_rng(0).normal(size=(8, 21)).astype(np.float32)
    np.testing.assert_allclose(
        model.predict(obs, deterministic=True)[0], policy.act(obs), atol=1e-5
    )


def test_an_unknown_algo_writes_nothing(tmp_path):
    obs_space = spaces.Box(-np.inf, np.inf, (4,), np.float32)
    with pytest.raises(ValueError, match="algo must be one of"):
        export_sb3(BCPolicy(4, 2, [8]), tmp_path / "x", obs_space, algos=("ppo", "dqn"))
    assert not (tmp_path / "x").exists()
