"""Behaviour cloning: training paths, resume, DAgger, evaluation, SB3 export, bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import BC_TINY, Spec, build

from rlkit.bc import BCConfig, load_bc_data, split_episodes, train_bc
from rlkit.cli.train_bc import main
from rlkit.collect import CollectConfig, collect
from rlkit.envs import RacingEnv
from rlkit.lerobot import DatasetReader, LeRobotFormatError, validate_dataset
from rlkit.policy import BCPolicy, build_policy_kwargs, load_bc_into, read_export_meta


def _cfg(demos, out, **kw):
    return BCConfig(data=str(demos), output=str(out), **{**BC_TINY, **kw})


def test_training_writes_policy_exports_logs_and_eval(demos, tmp_path):
    out = tmp_path / "run"
    res = train_bc(_cfg(demos, out, epochs=3, eval_episodes=3), progress=False)
    for name in (
        "bc_policy.pt",
        "policy_ppo.zip",
        "policy_sac.zip",
        "policy_td3.zip",
        "bc_export.json",
        "checkpoint.pt",
        "config.resolved.yml",
        "command.txt",
    ):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert len(rows) == 3 and float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    report = json.loads((out / "eval.json").read_text())
    assert set(report) >= {"bc", "expert", "bc_return_fraction_of_expert"}
    assert report["expert"]["lap_rate"] is not None and report["bc"]["episodes"] == 3
    assert res.loader == "memory" and res.epochs_run == 3


@pytest.mark.parametrize("algo", ["ppo", "sac", "td3"])
def test_sb3_export_loads_into_a_fresh_model_with_identical_actions(demos, tmp_path, algo):
    from stable_baselines3 import PPO, SAC, TD3

    out = tmp_path / "run"
    train_bc(_cfg(demos, out, epochs=2), progress=False)
    meta = read_export_meta(out)
    cls = {"ppo": PPO, "sac": SAC, "td3": TD3}[algo]
    model = cls(
        "MlpPolicy",
        RacingEnv(),
        policy_kwargs=build_policy_kwargs(meta["policy_kwargs"][algo]),
        device="cpu",
        seed=0,
    )
    before, _ = model.predict(np.zeros((1, 21), np.float32), deterministic=True)
    load_bc_into(model, out)
    policy = BCPolicy.load(out / "bc_policy.pt")
    obs = DatasetReader(demos).load_columns(["observation.state"])["observation.state"][::7]
    sb3_actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(sb3_actions, policy.act(obs), atol=2e-5)
    assert not np.allclose(before, policy.act(np.zeros((1, 21), np.float32)), atol=1e-3)
    batch = torch.as_tensor(obs[:4].copy())
    with torch.no_grad():  # the stochastic policies start with a small std
        if algo == "ppo":
            std = model.policy.get_distribution(batch).distribution.stddev
        elif algo == "sac":
            std = model.actor.get_action_dist_params(batch)[1].exp()
        else:
            std = None
    if std is not None:
        np.testing.assert_allclose(std.numpy(), meta["init_std"], rtol=1e-5)


def test_export_refuses_a_model_of_another_size(demos, tmp_path):
    from stable_baselines3 import TD3

    out = tmp_path / "run"
    train_bc(_cfg(demos, out, epochs=1), progress=False)
    model = TD3("MlpPolicy", RacingEnv(n_rays=9), device="cpu")
    with pytest.raises(ValueError, match="observations of size 21"):
        load_bc_into(model, out)


def test_dataloader_paths_train_too(demos, tmp_path):
    for workers, pin in ((0, "off"), (2, "on")):
        out = tmp_path / f"dl{workers}"
        res = train_bc(
            _cfg(demos, out, epochs=2, loader="dataloader", workers=workers, pin_memory=pin),
            progress=False,
        )
        assert res.loader == "dataloader" and res.epochs_run == 2
        losses = [float(r["train_loss"]) for r in csv.DictReader((out / "train_log.csv").open())]
        assert losses[1] < losses[0]


def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(demos, tmp_path):
    full = tmp_path / "full"
    train_bc(_cfg(demos, full, epochs=5, patience=50), progress=False)
    part = tmp_path / "part"
    train_bc(_cfg(demos, part, epochs=3, patience=50), progress=False)  # "interrupted" after 3
    res = train_bc(_cfg(demos, part, epochs=5, patience=50, resume=True), progress=False)
    assert res.epochs_run == 5
    assert len(list(csv.DictReader((part / "train_log.csv").open()))) == 5
    a, b = BCPolicy.load(full / "bc_policy.pt"), BCPolicy.load(part / "bc_policy.pt")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_dagger_labels_policy_states_and_writes_them_as_lerobot(demos, tmp_path):
    out = tmp_path / "run"
    train_bc(
        _cfg(demos, out, epochs=2, dagger_rounds=2, dagger_episodes=2, dagger_epochs=1),
        progress=False,
    )
    agg = DatasetReader(out / "dagger")
    assert validate_dataset(out / "dagger") == []
    demo_frames = DatasetReader(demos).num_frames
    assert agg.num_frames > demo_frames
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert [r["phase"] for r in rows] == ["0", "0", "1", "2"]


def test_validation_split_is_by_episode():
    episode = np.repeat(np.arange(10), 7)
    train, val = split_episodes(episode, 0.3, seed=1)
    assert set(episode[train]).isdisjoint(episode[val])
    assert len(set(episode[val])) == 3 and train.sum() + val.sum() == 70


def _far_actions(state: np.ndarray) -> np.ndarray:
    """3-dim actions far from [-1, 1], a function of the state that BC can learn."""
    return np.stack([state[:, 0] * 3 + 10, state[:, 1] - 5, state[:, 2]], axis=1)


#: any LeRobot v2.1 dataset (pandas list<double> columns): 5-dim float64 states, 3-dim actions
V21 = Spec(
    lengths=[40] * 3,
    dims={"observation.state": 5, "action": 3},
    dtype="float64",
    action_of_state=_far_actions,
)


def test_any_lerobot_v21_dataset_with_other_action_ranges(dataset, tmp_path):
    root, _ = dataset("v2.1", V21)
    out = tmp_path / "run"
    res = train_bc(
        BCConfig(data=str(root), output=str(out), epochs=30, hidden=[32, 32], eval_episodes=5),
        progress=False,
    )
    assert not (out / "eval.json").exists() and res.eval == {}  # no env to drive
    policy = BCPolicy.load(out / "bc_policy.pt")
    data = load_bc_data(BCConfig(data=str(root)))
    pred = policy.act(data.obs)
    assert pred[:, 0].min() >= data.action[:, 0].min() - 1e-4  # real action units
    assert np.abs(pred - data.action).mean() < np.abs(data.action - data.action.mean(0)).mean()
    assert read_export_meta(out)["act_dim"] == 3


def test_empty_dataset_is_refused(tmp_path):
    root = tmp_path / "empty"
    build(root, "v2.1", Spec(lengths=[], dims=V21.dims))
    with pytest.raises(LeRobotFormatError, match="no frames"):
        train_bc(BCConfig(data=str(root), output=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_bad_inputs_give_clear_errors(demos, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        train_bc(BCConfig(data=str(tmp_path / "nope"), output=str(tmp_path / "o")))
    with pytest.raises(LeRobotFormatError, match="observation.state"):
        train_bc(_cfg(demos, tmp_path / "o", obs_key="observation.stat"))
    with pytest.raises(LeRobotFormatError, match="racing env takes 2"):
        train_bc(_cfg(demos, tmp_path / "o", action_key="observation.state"))
    out = tmp_path / "exists"
    out.mkdir()
    (out / "x").write_text("keep")
    with pytest.raises(FileExistsError, match=r"not train_bc.py output \(x\)"):
        train_bc(_cfg(demos, out, epochs=1))
    for flag in ("resume", "overwrite"):
        with pytest.raises(FileExistsError, match=r"not train_bc.py output \(x\)"):
            train_bc(_cfg(demos, out, epochs=1, **{flag: True}))
    assert sorted(p.name for p in out.iterdir()) == ["x"]
    assert (out / "x").read_text() == "keep"
    assert not (tmp_path / "o").exists()  # nothing written for invalid input


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "epochs must be in [1, 1e6]"),
        (["--val-fraction", "1.5"], "val_fraction must be in [0, 1)"),
        (["--resume", "--overwrite"], "either --resume or --overwrite"),
    ],
)
def test_cli_bad_flags_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cli_runs_and_prints_the_eval_table(demos, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--data", str(demos), "--output", str(out), "--epochs", "2", "--hidden", "16", "16"]
    assert main([*argv, "--eval-episodes", "2"]) == 0
    text = capsys.readouterr().out
    assert "bc" in text and "expert" in text and "samples/s" in text
    assert main(argv) == 1  # exists now
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow
def test_bc_reaches_90_percent_of_the_expert_on_held_out_tracks(tmp_path):
    demos = tmp_path / "demos"
    collect(CollectConfig(episodes=100, output=str(demos)), progress=False)
    res = train_bc(
        BCConfig(data=str(demos), output=str(tmp_path / "bc"), eval_episodes=50), progress=False
    )
    assert res.eval["bc"].mean_return >= 0.9 * res.eval["expert"].mean_return
    assert res.eval["bc"].lap_rate >= 0.9
