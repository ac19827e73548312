"""RL fine-tuning: warm start, vec env kinds, checkpoints, resume (also after SIGKILL), outputs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BC_TINY, DEMO_EPISODES, DEMO_STEPS, RL_TINY, as_argv, wait_for

from rlkit.cli.train_rl import main
from rlkit.config import config_to_dict
from rlkit.envs import RacingConfig
from rlkit.policy import BCPolicy
from rlkit.rl import RLConfig, make_vec_env, newest_checkpoint, train_rl

ROOT = Path(__file__).resolve().parents[1]


def test_sac_from_bc_writes_every_output(demos, bc_export, tmp_path):
    out = tmp_path / "sac"
    cfg = RLConfig(
        algo="sac",
        timesteps=400,
        init_from=str(bc_export),
        demos=str(demos),
        output=str(out),
        eval_every=200,
        checkpoint_every=200,
        critic_warmup=100,
        **RL_TINY,
    )
    res = train_rl(cfg, progress=False)
    assert res.timesteps == 400
    for name in (
        "final_model.zip",
        "best_model.zip",
        "learning_curve.csv",
        "learning_curve.png",
        "eval.json",
        "config.resolved.yml",
        "command.txt",
    ):
        assert (out / name).is_file(), name
    report = json.loads((out / "eval.json").read_text())
    assert set(report) >= {"rl_final", "rl_selected", "bc", "expert", "policies", "validation"}
    # reported on the test tracks; selected on the validation tracks (another stream)
    assert report["seed_stream"] == "test" and report["validation"]["seed_stream"] == "val"
    assert report["episodes"] == cfg.test_episodes
    rows = list(csv.DictReader((out / "learning_curve.csv").open()))
    steps = [int(r["env_steps"]) for r in rows]
    assert steps == [0, 200, 400]
    returns = [float(r["mean_return"]) for r in rows]
    best_step = steps[returns.index(max(returns))]  # the first best evaluation
    assert report["policies"]["rl_selected"]["env_steps"] == best_step
    assert report["policies"]["rl_final"] == {"model": "final_model.zip", "env_steps": 400}
    ckpt = newest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "step_400"
    assert (ckpt / "replay_buffer.pkl").is_file()


def test_critic_warmup_keeps_the_bc_actor_frozen(demos, bc_export, tmp_path):
    from stable_baselines3 import SAC

    out = tmp_path / "frozen"
    cfg = RLConfig(
        algo="sac",
        timesteps=200,
        init_from=str(bc_export),
        demos=str(demos),
        output=str(out),
        critic_warmup=10_000,
        checkpoint_every=0,
        eval_every=0,
        **RL_TINY,
    )
    train_rl(cfg, progress=False)
    model = SAC.load(str(out / "final_model.zip"), device="cpu")
    obs = np.random.default_rng(0).uniform(0, 1, (16, 21)).astype(np.float32)
    np.testing.assert_allclose(
        model.predict(obs, deterministic=True)[0],
        BCPolicy.load(bc_export / "bc_policy.pt").act(obs),
        atol=2e-5,
    )


@pytest.mark.parametrize(("algo", "vec"), [("ppo", "dummy"), ("td3", "subproc")])
def test_other_algorithms_and_vec_envs_train(bc_export, tmp_path, algo, vec):
    out = tmp_path / algo
    cfg = RLConfig(
        algo=algo,
        vec=vec,
        timesteps=256,
        init_from=str(bc_export),
        output=str(out),
        eval_every=0,
        checkpoint_every=128,
        **{**RL_TINY, "envs": 2},
        **({"n_steps": 32} if algo == "ppo" else {}),
    )
    res = train_rl(cfg, progress=False)
    assert res.timesteps >= 256
    assert (out / "final_model.zip").is_file() and newest_checkpoint(out) is not None


def test_ppo_action_std_follows_its_schedule_not_the_gradient(bc_export, tmp_path):
    from stable_baselines3 import PPO

    out = tmp_path / "ppo"
    cfg = RLConfig(
        vec="dummy",
        timesteps=512,
        n_steps=32,
        action_std=[0.3, 0.05],
        gae_lambda=0.9,
        lr_schedule="linear",
        critic_warmup=64,
        init_from=str(bc_export),
        output=str(out),
        eval_every=0,
        checkpoint_every=0,
        **{**RL_TINY, "envs": 2},
    )
    train_rl(cfg, progress=False)
    model = PPO.load(str(out / "final_model.zip"))
    # the last rollout started at 448 env steps: 0.3 + 448 / 512 * (0.05 - 0.3)
    std = model.policy.log_std.detach().exp().numpy()
    np.testing.assert_allclose(std, [0.08125, 0.08125], rtol=1e-6)
    assert model.policy.log_std.requires_grad  # the saved model stays trainable
    assert model.learning_rate(0.0) == 0.0  # linear decay to 0 at the end
    assert model.gae_lambda == 0.9


def test_resume_continues_with_the_replay_buffer(bc_export, tmp_path):
    from stable_baselines3 import SAC

    out = tmp_path / "run"
    base = {
        "algo": "sac",
        "init_from": str(bc_export),
        "output": str(out),
        "eval_every": 100,
        "checkpoint_every": 100,
        **RL_TINY,
    }
    train_rl(RLConfig(timesteps=200, **base), progress=False)
    res = train_rl(RLConfig(timesteps=400, resume=True, **base), progress=False)
    assert res.timesteps == 400
    model = SAC.load(str(out / "final_model.zip"))
    assert model.num_timesteps == 400
    steps = [int(r["env_steps"]) for r in csv.DictReader((out / "learning_curve.csv").open())]
    assert steps == sorted(set(steps)) and steps[-1] == 400
    buf = newest_checkpoint(out) / "replay_buffer.pkl"
    model.load_replay_buffer(str(buf))
    assert model.replay_buffer.size() * 4 == 400  # 4 envs: every transition kept


def test_sigkill_at_any_moment_resumes_from_the_last_checkpoint(bc_export, tmp_path):
    out = tmp_path / "killed"
    args = ["--algo", "sac", "--init-from", str(bc_export), "--output", str(out),
            *as_argv(RL_TINY), "--eval-every", "0", "--checkpoint-every", "200"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train_rl.py"), *args, "--timesteps", "100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def saved_400() -> bool:  # the kill comes after the checkpoint at step 400, at any moment
        ckpt = newest_checkpoint(out)
        return ckpt is not None and int(ckpt.name[5:]) >= 400

    try:
        wait_for(saved_400, proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # Nothing half-written under a final name: every checkpoint folder is complete or ignored.
    for folder in (out / "checkpoints").iterdir():
        if (folder / "done").is_file():
            assert (folder / "model.zip").is_file() and (folder / "replay_buffer.pkl").is_file()
    step = int(newest_checkpoint(out).name[5:])
    assert main([*args, "--timesteps", str(step + 200), "--resume"]) == 0
    assert newest_checkpoint(out).name == f"step_{step + 200}"


def test_eval_only_and_video(bc_export, tmp_path, capsys):
    import av
    from PIL import Image

    out = tmp_path / "run"
    train_rl(
        RLConfig(
            algo="td3",
            timesteps=64,
            init_from=str(bc_export),
            output=str(out),
            eval_every=0,
            checkpoint_every=0,
            **RL_TINY,
        ),
        progress=False,
    )
    gif = tmp_path / "lap.gif"
    argv = [
        "--algo",
        "td3",
        "--eval-only",
        str(out / "final_model.zip"),
        "--eval-episodes",
        "2",
        "--max-episode-steps",
        "60",
        "--video",
        str(gif),
    ]
    assert main(argv) == 0
    assert "expert" in capsys.readouterr().out
    with Image.open(gif) as im:
        assert im.n_frames > 5 and im.size == (256, 256)
    mp4 = tmp_path / "lap.mp4"
    assert main([*argv[:-1], str(mp4)]) == 0
    with av.open(str(mp4)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert 5 < len(frames) <= 61 and frames[0].shape == (256, 256, 3)  # <= 60 steps + start
    assert not list(tmp_path.glob(".lap*"))  # no temporary file left behind
    assert main([*argv[:1], "sac", *argv[2:]]) == 1  # a TD3 file is not a SAC model
    assert "not a saved SAC model" in capsys.readouterr().err


def test_bad_inputs(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--algo", "dqn"])
    assert e.value.code == 2
    assert main(["--init-from", str(tmp_path), "--output", str(tmp_path / "o")]) == 1
    assert "not a train_bc.py output folder" in capsys.readouterr().err
    assert main(["--resume", "--output", str(tmp_path / "none")]) == 1
    assert "does not exist; start a new run without --resume" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    # a PPO-only setting with another algorithm is an error, not silently ignored
    with pytest.raises(SystemExit) as e:
        main(["--algo", "sac", "--gae-lambda", "0.9", "--output", str(tmp_path / "s")])
    assert e.value.code == 2
    assert "only PPO reads --gae-lambda; --algo sac would ignore it" in capsys.readouterr().err
    td3 = ["--algo", "td3", "--n-steps", "64", "--target-kl", "0.02"]
    with pytest.raises(SystemExit) as e:
        main([*td3, "--output", str(tmp_path / "s")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "only PPO reads --target-kl, --n-steps; --algo td3 would ignore them" in err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("vec", ["batched", "dummy"])
def test_training_cars_keep_a_margin_from_the_edge_and_evaluation_uses_the_road(vec):
    """PPO's training cars leave the road at 0.8 of the half-width (SAC/TD3 and
    --train-edge 1: at the edge); the env config evaluation drives is not touched."""
    road = RacingConfig()
    for cfg, edge in (
        (RLConfig(vec=vec, envs=2), 0.8),
        (RLConfig(vec=vec, envs=2, algo="sac"), 1.0),
        (RLConfig(vec=vec, envs=2, train_edge=0.8), 0.8),
    ):
        env = make_vec_env(cfg, road)
        try:
            configs = [env.sim.config] if vec == "batched" else env.get_attr("config")
            assert [c.edge for c in configs] == [edge] * len(configs)
        finally:
            env.close()
    assert road.edge == 1.0
    with pytest.raises(SystemExit) as e:
        main(["--train-edge", "0", "--output", "unused"])
    assert e.value.code == 2


def test_ppo_defaults_anneal_the_exploration_std_unless_it_is_learned(capsys):
    assert RLConfig(action_std=[0.2, 0.1]).action_std == [0.2, 0.1]
    assert RLConfig(learn_std=True).action_std is None
    assert (RLConfig().timesteps, RLConfig(algo="sac").timesteps) == (1_000_000, 500_000)
    # resolved per algorithm, so config.resolved.yml records what the run used
    ppo, sac = RLConfig(), RLConfig(algo="sac")
    assert (ppo.gamma, ppo.train_edge, ppo.action_std) == (0.999, 0.8, [0.4, 0.05])
    assert (sac.gamma, sac.train_edge, sac.action_std) == (0.99, 1.0, None)
    assert config_to_dict(ppo)["gamma"] == 0.999
    with pytest.raises(SystemExit) as e:
        main(["--learn-std", "--action-std", "0.3", "0.1", "--output", "unused"])
    assert e.value.code == 2
    assert "--learn-std learns the exploration std, --action-std anneals it" in (
        capsys.readouterr().err
    )


def test_checkpoint_from_another_algorithm_is_refused(bc_export, tmp_path, capsys):
    out = tmp_path / "run"
    train_rl(
        RLConfig(
            algo="sac",
            timesteps=100,
            init_from=str(bc_export),
            output=str(out),
            eval_every=0,
            checkpoint_every=100,
            **RL_TINY,
        ),
        progress=False,
    )
    argv = ["--algo", "ppo", "--resume", "--output", str(out), "--timesteps", "200"]
    assert main(argv) == 1
    assert "made by SAC" in capsys.readouterr().err


def test_resume_with_other_training_settings_is_refused(bc_export, tmp_path, capsys):
    """SB3 restores gamma, GAE lambda, ... from the checkpoint: a resume asking for others
    is refused (they would be ignored), and the folder keeps its own config."""
    out = tmp_path / "run"
    argv = ["--init-from", str(bc_export), "--output", str(out), "--vec", "dummy",
            "--timesteps", "64", "--n-steps", "32", "--eval-every", "0",
            "--checkpoint-every", "64", *as_argv({**RL_TINY, "envs": 2}),
            "--gae-lambda", "0.9"]  # fmt: skip
    assert main(argv) == 0
    saved = (out / "config.resolved.yml").read_text()
    capsys.readouterr()
    resume = [*argv, "--resume", "--timesteps", "128"]
    assert main([*resume, "--gae-lambda", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "trained with gae_lambda 0.9 (asked: 0.5)" in err and "start a new --output" in err
    assert (out / "config.resolved.yml").read_text() == saved
    assert main([*resume, "--gamma", "0.99"]) == 1
    assert "gamma 0.999 (asked: 0.99)" in capsys.readouterr().err
    # SB3 does not save these; the checkpoint records them
    assert main([*resume, "--train-edge", "1"]) == 1
    assert "train_edge 0.8 (asked: 1.0)" in capsys.readouterr().err
    assert main([*resume, "--action-std", "0.3", "0.05"]) == 1
    assert "action_std [0.4, 0.05] (asked: [0.3, 0.05])" in capsys.readouterr().err
    assert main(resume) == 0  # the same settings resume


def test_threads_setting_is_applied(bc_export, tmp_path):
    train_rl(
        RLConfig(
            algo="td3",
            timesteps=32,
            init_from=str(bc_export),
            output=str(tmp_path / "t"),
            eval_every=0,
            checkpoint_every=0,
            threads=1,
            **RL_TINY,
        ),
        progress=False,
    )
    assert torch.get_num_threads() == 1


def test_demo_prefill_fills_the_replay_buffer_with_consistent_transitions(demos):
    from stable_baselines3 import SAC

    from rlkit.envs import RacingVecEnv
    from rlkit.lerobot import DatasetReader
    from rlkit.rl import prefill_demos

    model = SAC("MlpPolicy", RacingVecEnv(4, max_episode_steps=100), buffer_size=1000, device="cpu")
    n = prefill_demos(model, str(demos), model.get_env().config)
    cols = DatasetReader(demos).load_columns(["observation.state", "action", "episode_index"])
    # DEMO_EPISODES episodes of DEMO_STEPS steps, all cut by the time limit: their last
    # frames are dropped (and the buffer takes whole rows of 4 envs).
    lengths = np.bincount(cols["episode_index"])
    assert lengths.tolist() == [DEMO_STEPS] * DEMO_EPISODES
    kept = DEMO_EPISODES * (DEMO_STEPS - 1)
    assert n == kept - kept % 4 and model.replay_buffer.pos == n // 4
    buf = model.replay_buffer
    np.testing.assert_array_equal(buf.observations[0, 1], cols["observation.state"][1])
    np.testing.assert_array_equal(buf.next_observations[0, 1], cols["observation.state"][2])
    np.testing.assert_array_equal(buf.actions[0, 1], cols["action"][1])
    assert buf.dones[: buf.pos].sum() == 0  # no crash in the demos, no fake terminals


def test_demo_features_are_named_like_in_bc(demos, tmp_path, capsys):
    argv = ["--algo", "sac", "--demos", str(demos), "--output", str(tmp_path / "o"),
            "--envs", "2", "--timesteps", "64", "--max-episode-steps", "100"]  # fmt: skip
    assert main([*argv, "--obs-key", "state"]) == 1
    assert "feature 'state' is not in" in capsys.readouterr().err
    assert main([*argv, "--action-key", "next.reward", "--overwrite"]) == 1
    assert "do not match the env" in capsys.readouterr().err


def test_tensorboard_curve_continues_across_resume(bc_export, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb, out = tmp_path / "tb", tmp_path / "run"
    base = {
        "algo": "ppo",
        "n_steps": 32,
        "init_from": str(bc_export),
        "output": str(out),
        "eval_every": 128,
        "checkpoint_every": 128,
        "tensorboard": str(tb),
        **RL_TINY,
    }
    train_rl(RLConfig(timesteps=256, **base), progress=False)
    train_rl(RLConfig(timesteps=512, resume=True, **base), progress=False)
    runs = sorted(p.name for p in tb.iterdir())
    assert runs == ["ppo_1"]  # one curve, not a new run per resume
    steps = []
    for events in sorted((tb / "ppo_1").iterdir()):
        acc = EventAccumulator(str(events))
        acc.Reload()
        steps += [s.step for s in acc.Scalars("eval/mean_return")]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 512


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_bc_loss_keeps_the_actor_near_the_demonstrations(demos, bc_export, algo):
    """The BC loss is added to SB3's own actor updates (optimizer step pre-hook): with it the
    actor stays closer to the demonstrated actions than the same run without it."""
    from rlkit.envs import RacingVecEnv
    from rlkit.policy import build_policy_kwargs, load_bc_into
    from rlkit.rl import ALGOS, BCRegulariser, load_demos

    meta = json.loads((bc_export / "bc_export.json").read_text())

    def demo_error(weight: float) -> tuple[float, BCRegulariser]:
        env = RacingVecEnv(4, max_episode_steps=100)
        model = ALGOS[algo](
            "MlpPolicy",
            env,
            policy_kwargs=build_policy_kwargs(meta["policy_kwargs"][algo]),
            learning_starts=0,
            batch_size=64,
            buffer_size=1000,
            seed=0,
            device="cpu",
        )
        load_bc_into(model, str(bc_export))
        cols = load_demos(str(demos), model)
        reg = BCRegulariser(cols["obs"], cols["action"], weight, seed=0)
        model.learn(200, callback=reg)
        assert not model.actor.optimizer._optimizer_step_pre_hooks  # removed after learn
        pred, _ = model.predict(cols["obs"], deterministic=True)
        return float(np.mean((pred - cols["action"]) ** 2)), reg

    free, _ = demo_error(0.0)
    held, reg = demo_error(10.0)
    assert np.isfinite(reg.last_loss)  # the hook ran inside SB3's actor updates
    assert held < free


def test_bc_and_rl_drive_the_env_the_demonstrations_were_recorded_in(tmp_path):
    """A dataset collected with another --preview: BC and RL rebuild that env (20-d state)."""
    from stable_baselines3 import PPO

    from rlkit.bc import BCConfig, train_bc
    from rlkit.collect import CollectConfig, collect

    demos, bc, out = tmp_path / "demos", tmp_path / "bc", tmp_path / "rl"
    cfg = CollectConfig(
        episodes=2, workers=1, max_steps=100, preview=[5, 10, 20], output=str(demos)
    )
    collect(cfg, progress=False)
    bc_cfg = BCConfig(data=str(demos), output=str(bc), epochs=1, **{**BC_TINY, "eval_episodes": 1})
    assert train_bc(bc_cfg, progress=False).eval is not None
    rl = RLConfig(algo="ppo", timesteps=128, n_steps=32, init_from=str(bc), output=str(out),
                  eval_every=128, test_episodes=2, **RL_TINY)  # fmt: skip
    train_rl(rl, progress=False)
    model = PPO.load(str(out / "final_model.zip"))
    assert model.observation_space.shape == (20,)
    assert json.loads((out / "eval.json").read_text())["rl_final"]["episodes"] == 2
