"""train_world_model.py end to end with tiny sizes: CLI, resume, determinism, bad input."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WM_TINY
from PIL import Image

from rlkit.cli.train_world_model import main
from rlkit.config import ConfigError, parse_config
from rlkit.planet.envs import make_pixel_env, render_pendulum
from rlkit.planet.storage import EpisodeStorage, load_episode
from rlkit.planet.train import WorldModelConfig, checkpoints, train_world_model


def cfg_of(data: Path, out: Path, *extra: str) -> WorldModelConfig:
    return parse_config(WorldModelConfig, "world_model", [str(data), str(out), *WM_TINY, *extra])


@pytest.fixture(autouse=True)
def _no_config_yml(tmp_path: Path, monkeypatch):
    """Run in an empty folder, so the repository's config.yml is not picked up; restore the
    torch thread count the runs set (--threads 1)."""
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_pixel_envs_give_64x64_uint8_frames() -> None:
    for name in ("pendulum", "racing"):
        env = make_pixel_env(name, action_repeat=2, max_episode_steps=6)
        obs = env.reset(seed=0)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        steps, done = 0, False
        while not done:
            obs, r, term, trunc = env.step(np.zeros(env.action_dim))
            steps += 1
            done = term or trunc
        assert steps == 3 and obs.shape == (64, 64, 3)
        env.close()
    up, down = render_pendulum(0.0), render_pendulum(np.pi)
    assert (up[:32] < 250).any() and not (up[40:] < 250).any()  # the rod points up
    np.testing.assert_array_equal(up[::-1], down)


def test_pendulum_frames_are_deterministic_per_seed() -> None:
    a, b = make_pixel_env("pendulum"), make_pixel_env("pendulum")
    np.testing.assert_array_equal(a.reset(seed=3), b.reset(seed=3))
    for _ in range(3):
        np.testing.assert_array_equal(a.step(np.ones(1))[0], b.step(np.ones(1))[0])


def test_cli_runs_collects_and_writes_every_output(tmp_path: Path, capsys) -> None:
    data, out = tmp_path / "data", tmp_path / "run"
    rc = main([str(data), str(out), *WM_TINY, "--iterations", "2", "--eval-every", "1"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "iterations      2" in printed.out
    # the plan before any work, the pace after the first iteration
    text = printed.out + printed.err
    assert "plan: collect 2 seed episodes (0 on disk), then 2 iterations (1..2)" in text
    assert "first iteration took" in text and "1 more: ~" in text
    eps = sorted(data.glob("episode_*.npz"))
    assert len(eps) == 4  # 2 seed + 1 per iteration
    ep = load_episode(eps[-1])
    assert ep["obs"].shape == (9, 64, 64, 3) and ep["action"].shape == (8, 1)
    assert ep["truncated"][-1] and not ep["terminal"].any()  # pendulum: time limit only
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["iteration"] for r in rows] == ["0", "1"]
    assert rows[-1]["train_step"] == "4" and float(rows[-1]["eval_return"]) < 0
    # real row, model row (reconstruction, then open loop after a red line), labelled
    png = np.asarray(Image.open(out / "openloop_000002.png").convert("RGB"))
    assert png.shape[0] == 14 + 2 * 64 and (png.shape[1] - 44) % 64 == 0
    red = (png[:, :, 0] > 200) & (png[:, :, 1] < 40) & (png[:, :, 2] < 40)
    assert red[:, 44 + 5 * 64 - 1].all()  # the boundary after 5 seen frames
    assert (png[:14, 44:] < 128).any() and (png[14:, :44] < 128).any()  # header and labels
    assert [p.name for p in checkpoints(out)] == ["ckpt_000001.pt", "ckpt_000002.pt"]
    assert (out / "config.resolved.yml").is_file() and (out / "command.txt").is_file()
    result = json.loads((out / "result.json").read_text())
    assert result["train_steps"] == 4 and result["episodes"] == 4 and result["env_steps"] == 32
    assert not list(out.rglob(".*tmp*"))
    assert [p.name for p in data.glob(".*")] == [".rlkit.lock"]  # no temporary file left


def test_max_minutes_is_a_hard_budget_even_inside_an_iteration(tmp_path: Path) -> None:
    # 0.002 min = 0.12 s: the seed episodes and the first steps already spend it, so the
    # first iteration stops after one of its 100000 steps, collects nothing, and checkpoints.
    cfg = cfg_of(
        tmp_path / "d", tmp_path / "o", "--train-steps", "100000", "--max-minutes", "0.002"
    )
    res = train_world_model(cfg, progress=False)
    assert res.stopped_early and res.iterations == 1 and res.train_steps < 100000
    rows = list(csv.DictReader((tmp_path / "o" / "metrics.csv").open()))
    assert len(rows) == 1 and int(rows[0]["train_step"]) == res.train_steps
    assert rows[0]["train_return"] == "nan" and res.episodes == 2  # seed episodes only
    assert [p.name for p in checkpoints(tmp_path / "o")] == ["ckpt_000001.pt"]


def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = train_world_model(
        cfg_of(tmp_path / "d1", tmp_path / "o1", "--iterations", "3"), progress=False
    )
    train_world_model(cfg_of(tmp_path / "d2", tmp_path / "o2", "--iterations", "2"), progress=False)
    resumed = train_world_model(
        cfg_of(tmp_path / "d2", tmp_path / "o2", "--iterations", "3"), progress=False
    )
    assert resumed.resumed_from == 2 and resumed.train_steps == straight.train_steps == 6
    # seed episodes were counted, not re-collected: 2 seed + 3 planner episodes
    assert len(list((tmp_path / "d2").glob("episode_*.npz"))) == 5
    blob1 = torch.load(checkpoints(tmp_path / "o1")[-1], weights_only=False)
    blob2 = torch.load(checkpoints(tmp_path / "o2")[-1], weights_only=False)
    assert blob2["iteration"] == 3 and blob2["train_step"] == 6
    state = next(iter(blob2["optimizer"]["state"].values()))
    assert int(state["step"]) == 6  # the optimiser's moments were restored, not restarted
    for k, v in blob1["model"].items():
        torch.testing.assert_close(blob2["model"][k], v, msg=k)
    for a, b in zip(
        sorted((tmp_path / "d1").glob("episode_*.npz")),
        sorted((tmp_path / "d2").glob("episode_*.npz")),
        strict=True,
    ):
        np.testing.assert_array_equal(load_episode(a)["action"], load_episode(b)["action"])
    rows = list(csv.DictReader((tmp_path / "o2" / "metrics.csv").open()))
    assert [r["iteration"] for r in rows] == ["0", "1", "2"]


def test_killed_run_resumes_from_the_last_good_checkpoint(tmp_path: Path, capsys) -> None:
    data, out = tmp_path / "d", tmp_path / "o"
    train_world_model(cfg_of(data, out, "--iterations", "2"), progress=False)
    # as if killed while writing iteration 3: a damaged checkpoint, a half metrics row
    (out / "checkpoints" / "ckpt_000003.pt").write_bytes(b"\x00garbage")
    with (out / "metrics.csv").open("a") as f:
        f.write("2,6,5,40,1.0")
    capsys.readouterr()
    r = train_world_model(cfg_of(data, out, "--iterations", "3"), progress=False)
    err = capsys.readouterr().err  # printed, not logged below the visible level
    assert "skipping the damaged checkpoint" in err and "ckpt_000003.pt" in err
    assert f"resuming {out} at iteration 2 (step 4)" in err and r.resumed_from == 2
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["iteration"] for r in rows] == ["0", "1", "2"]


def test_tensorboard_keeps_the_steps_of_metrics_csv_across_a_resume(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data, out = tmp_path / "d", tmp_path / "o"
    train_world_model(cfg_of(data, out, "--iterations", "3", "--tensorboard"), progress=False)
    # as if killed after iteration 3 logged its metrics, before its checkpoint landed
    (out / "checkpoints" / "ckpt_000003.pt").unlink()
    r = train_world_model(cfg_of(data, out, "--iterations", "4", "--tensorboard"), progress=False)
    assert r.resumed_from == 2
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    steps = [int(r["train_step"]) for r in rows]
    assert steps == [2, 4, 6, 8]  # the logged-then-lost iteration 3 once, from the rerun
    assert [e.step for e in acc.Scalars("train/loss")] == steps
    assert [e.step for e in acc.Scalars("collect/return")] == steps
    logged = [e.value for e in acc.Scalars("train/loss")]
    assert logged == pytest.approx([float(r["loss"]) for r in rows], rel=1e-5)


def test_sigkill_mid_run_leaves_no_corrupt_file(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    data, out = tmp_path / "d", tmp_path / "o"
    script = Path(__file__).resolve().parents[1] / "train_world_model.py"
    cmd = [sys.executable, str(script), str(data), str(out), *WM_TINY, "--iterations", "1000"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(checkpoints(out)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        # inside a later iteration: after its episode is written, before its checkpoint
        n = len(list(data.glob("episode_*.npz")))
        while len(list(data.glob("episode_*.npz"))) == n and time.time() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert len(checkpoints(out)) >= 2
    for ckpt in checkpoints(out):
        torch.load(ckpt, weights_only=False)  # every checkpoint under its final name loads
    for ep in data.glob("episode_*.npz"):
        load_episode(ep)  # every episode under its final name loads
    done = torch.load(checkpoints(out)[-1], weights_only=False)["iteration"]
    r = train_world_model(cfg_of(data, out, "--iterations", str(done + 1)), progress=False)
    assert r.resumed_from == done and r.iterations == done + 1


def test_loss_settings_come_from_the_preset_unless_given(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    cfg = cfg_of(tmp_path / "d", tmp_path / "o")
    assert (cfg.loss_value("free_nats", cpu), cfg.loss_value("kl_balance", cpu)) == (1.0, 0.8)
    paper = cfg_of(tmp_path / "d", tmp_path / "o", "--preset", "paper")
    assert (paper.loss_value("free_nats", cpu), paper.loss_value("kl_balance", cpu)) == (3, 0)
    given = cfg_of(tmp_path / "d", tmp_path / "o", "--kl-balance", "0", "--free-nats", "2")
    assert (given.loss_value("free_nats", cpu), given.loss_value("kl_balance", cpu)) == (2, 0)
    with pytest.raises(ConfigError, match="kl_balance must be in"):
        cfg_of(tmp_path / "d", tmp_path / "o", "--kl-balance", "1")


def test_resume_flags(tmp_path: Path) -> None:
    data, out = tmp_path / "d", tmp_path / "o"
    train_world_model(cfg_of(data, out, "--iterations", "1", "--resume"), progress=False)
    with pytest.raises(FileExistsError, match="--no-resume"):
        train_world_model(cfg_of(data, out, "--iterations", "2", "--no-resume"), progress=False)
    r = train_world_model(cfg_of(data, out, "--iterations", "2", "--resume"), progress=False)
    assert r.resumed_from == 1


def test_resume_with_other_sizes_is_refused(tmp_path: Path) -> None:
    train_world_model(cfg_of(tmp_path / "d", tmp_path / "o", "--iterations", "1"), progress=False)
    before = (tmp_path / "o" / "config.resolved.yml").read_text()
    with pytest.raises(ValueError, match="checkpoint is for model"):
        train_world_model(
            cfg_of(tmp_path / "d", tmp_path / "o", "--iterations", "2", "--deter-size", "9"),
            progress=False,
        )
    assert (tmp_path / "o" / "config.resolved.yml").read_text() == before


def test_seeded_runs_are_deterministic(tmp_path: Path) -> None:
    a = train_world_model(
        cfg_of(tmp_path / "a", tmp_path / "oa", "--iterations", "1"), progress=False
    )
    b = train_world_model(
        cfg_of(tmp_path / "b", tmp_path / "ob", "--iterations", "1"), progress=False
    )
    assert a.last_loss == b.last_loss
    c = train_world_model(
        cfg_of(tmp_path / "c", tmp_path / "oc", "--iterations", "1", "--seed", "1"), progress=False
    )
    assert c.last_loss != a.last_loss


def test_loading_options_train(tmp_path: Path) -> None:
    for i, extra in enumerate(
        [
            ["--no_parallel_loading"],
            ["--preload_images", "--preload_dtype", "float16"],
            ["--cache_images", "--cache_size", "1"],
            ["--num_workers", "1"],
        ]
    ):
        r = train_world_model(
            cfg_of(tmp_path / f"d{i}", tmp_path / f"o{i}", "--iterations", "1", *extra),
            progress=False,
        )
        assert r.train_steps == 2 and np.isfinite(r.last_loss["loss"]), extra


def test_bad_input_corrupt_files_warn_and_unwritable_output_fails(tmp_path: Path, caplog) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "episode_000000.npz").write_bytes(b"corrupt")
    with caplog.at_level(logging.WARNING):
        r = train_world_model(cfg_of(data, tmp_path / "o", "--iterations", "1"), progress=False)
    assert "episode_000000.npz" in caplog.text and r.episodes == 3  # 2 seed + 1 planner
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main([str(tmp_path / "d"), str(blocker / "run"), *WM_TINY, "--iterations", "1"])
    assert rc == 1


def test_flags_and_config_keys(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yml"
    cfg_file.write_text("world_loading_workers: 7\nworld_model:\n  env: racing\n")
    cfg = parse_config(WorldModelConfig, "world_model", ["d", "o", "--config", str(cfg_file)])
    assert (cfg.loading_workers, cfg.env, cfg.data_dir, cfg.output_dir) == (7, "racing", "d", "o")
    cfg = parse_config(
        WorldModelConfig,
        "world_model",
        ["--config", str(cfg_file), "--loading_workers", "2", "--no_parallel_loading"],
    )
    assert (
        cfg.loading_workers == 2
        and cfg.loading_threads == 1
        and cfg.data_dir == "data/world_episodes"
    )
    with pytest.raises(SystemExit) as e:
        main(["d", "o", "--config", str(cfg_file), "--preload-images", "--cache-images"])
    assert e.value.code == 2
    train_world_model(cfg_of(tmp_path / "d", tmp_path / "o", "--iterations", "1"), progress=False)
    with pytest.raises(ValueError, match="another environment"):
        train_world_model(
            cfg_of(tmp_path / "d", tmp_path / "o2", "--iterations", "1", "--action-repeat", "3")
        )


def test_racing_env_trains(tmp_path: Path) -> None:
    r = train_world_model(
        cfg_of(tmp_path / "d", tmp_path / "o", "--env", "racing", "--iterations", "1"),
        progress=False,
    )
    assert r.train_steps == 2
    st = EpisodeStorage(tmp_path / "d")
    assert all(i.action_dim == 2 for i in st.discover())


def test_racing_ego_camera_is_recorded_and_kept_apart_from_top_view_episodes(tmp_path: Path):
    top, ego = (make_pixel_env("racing", view=v) for v in ("top", "ego"))
    assert not np.array_equal(top.reset(seed=4), ego.reset(seed=4))  # the same car, two cameras
    assert top.info["laps"] == ego.info["laps"] == 0.0
    args = ("--env", "racing", "--iterations", "1", "--camera-view", "ego")
    train_world_model(cfg_of(tmp_path / "d", tmp_path / "o", *args), progress=False)
    assert json.loads((tmp_path / "d" / "env.json").read_text())["camera_view"] == "ego"
    # top-view frames must not join a folder of ego-view episodes
    with pytest.raises(ValueError, match="camera_view: folder has 'ego'"):
        train_world_model(
            cfg_of(tmp_path / "d", tmp_path / "o2", "--env", "racing", "--iterations", "1"),
            progress=False,
        )
    with pytest.raises(ConfigError, match="--camera-view applies to --env racing only"):
        cfg_of(tmp_path / "d3", tmp_path / "o3", "--camera-view", "ego")


def test_racing_dashboard_shows_speed_and_steering_and_is_recorded(tmp_path: Path) -> None:
    env = make_pixel_env("racing", action_repeat=4, view="ego")
    strip = env.reset(seed=3)[-4:]  # the bottom 4 rows: speed bar, then steering bar
    assert not strip.any()  # at rest, wheels straight: an empty black strip
    for _ in range(6):
        obs = env.step(np.array([1.0, 1.0]))[0]  # full left lock, full throttle
    sim = env.env.sim
    speed_px = (obs[-4:-2] == 235).all(axis=-1).sum(axis=1)  # white pixels per row
    assert (speed_px == round(sim.v[0] / sim.config.car.max_speed * 64)).all() and speed_px[0] > 5
    steer = obs[-2:, :, 2] == 255  # blue, left of the centre for a left turn
    assert steer[:, :32].sum() > 0 and steer[:, 32:].sum() == 0
    bare = make_pixel_env("racing", action_repeat=4, view="ego", dashboard=False)
    assert bare.reset(seed=3)[-4:].any()  # the road behind the car, no strip
    args = ("--env", "racing", "--iterations", "1", "--camera-view", "ego")
    train_world_model(cfg_of(tmp_path / "d", tmp_path / "o", *args), progress=False)
    assert json.loads((tmp_path / "d" / "env.json").read_text())["dashboard"] is True
    with pytest.raises(ValueError, match="dashboard: folder has True, run wants None"):
        train_world_model(
            cfg_of(tmp_path / "d", tmp_path / "o2", *args, "--no-dashboard"), progress=False
        )


@pytest.mark.slow
def test_cpu_preset_learns_to_reconstruct_pendulum_frames(tmp_path: Path) -> None:
    """A real (short) run with the cpu preset's model: the reconstruction loss falls."""
    cfg = parse_config(
        WorldModelConfig,
        "world_model",
        [
            str(tmp_path / "d"),
            str(tmp_path / "o"),
            "--iterations", "4",
            "--train-steps", "25",
            "--batch-size", "8",
            "--seq-len", "16",
            "--eval-every", "4",
            "--no-tensorboard",
        ],
    )  # fmt: skip
    r = train_world_model(cfg, progress=False)
    rows = list(csv.DictReader((tmp_path / "o" / "metrics.csv").open()))
    assert float(rows[-1]["obs_loss"]) < 0.5 * float(rows[0]["obs_loss"])
    assert np.isfinite(r.eval_return)
