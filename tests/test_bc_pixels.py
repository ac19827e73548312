"""train_bc.py --obs-key observation.images.top: a CNN policy on the decoded camera frames,
both loaders, the frame gap, evaluated on held-out tracks by rendering them; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from rlkit.bc import BCConfig, load_bc_data  # noqa: E402
from rlkit.bc.data import frame_gap_rows  # noqa: E402
from rlkit.cli.collect_demonstrations import main as collect_main  # noqa: E402
from rlkit.cli.train_bc import main as bc_main  # noqa: E402
from rlkit.collect import CAMERA_KEY, CollectConfig  # noqa: E402
from rlkit.envs.expert import Expert  # noqa: E402
from rlkit.policy import BCPolicy, PixelBCPolicy, load_policy  # noqa: E402
from rlkit.rollout import expert_driver, pixel_policy_driver, rollout  # noqa: E402

SIZE, STEPS, EPISODES = 40, 60, 4
TRAIN = ["--obs-key", CAMERA_KEY, "--epochs", "2", "--batch-size", "32", "--hidden", "16",
         "--eval-episodes", "2", "--frame-gap", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def camera_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pixels") / "demos"
    flags = ["--episodes", str(EPISODES), "--max-steps", str(STEPS), "--camera", str(SIZE)]
    assert collect_main([*flags, "--workers", "1", "--output", str(out)]) == 0
    return out


def test_frame_gap_rows_stay_inside_their_episode():
    episode = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2])
    assert frame_gap_rows(episode, 2).tolist() == [0, 0, 0, 1, 2, 5, 5, 5, 8]
    assert frame_gap_rows(episode, 0).tolist() == list(range(9))


def test_pixel_data_are_the_decoded_frames_in_row_order(camera_set):
    data = load_bc_data(BCConfig(data=str(camera_set), obs_key=CAMERA_KEY, frame_gap=3))
    assert data.pixels and data.obs.shape == (EPISODES * STEPS, SIZE, SIZE, 3)
    assert data.obs.dtype == np.uint8 and data.obs_mean.shape == (3,)
    # the frames of episode 2, as the expert drove it, within the codec's error
    run = rollout(expert_driver(Expert()), _env(camera_set), 0, [2], "demo",
                  noise=CollectConfig().noise, render_size=SIZE)  # fmt: skip
    rendered = np.stack(run.frames[0][:STEPS]).astype(np.float64)
    decoded = data.obs[data.episode == 2].astype(np.float64)
    assert 10 * np.log10(255**2 / ((decoded - rendered) ** 2).mean()) > 25
    x = data.inputs(np.array([0, 5, STEPS]))  # (rows, 2 frames, H, W, 3)
    assert x.shape == (3, 2, SIZE, SIZE, 3)
    assert np.array_equal(x[1, 1], data.obs[2]) and np.array_equal(x[2, 1], data.obs[STEPS])


def _env(root: Path):
    from rlkit.lerobot.env_meta import load_env_config

    return load_env_config(root)


@pytest.mark.parametrize("loader", ["memory", "dataloader"])
def test_bc_from_pixels_trains_evaluates_on_tracks_and_resumes(loader, camera_set, tmp_path):
    out = tmp_path / "bc"
    workers = "1" if loader == "dataloader" else "0"  # a real DataLoader worker process
    argv = ["--data", str(camera_set), "--output", str(out), "--loader", loader, *TRAIN,
            "--workers", workers]  # fmt: skip
    assert bc_main(argv) == 0
    policy = load_policy(out / "bc_policy.pt")
    assert isinstance(policy, PixelBCPolicy) and policy.frames == 2
    assert (policy.gap, policy.view) == (3, "top")  # what to feed it travels with it
    ev = json.loads((out / "eval.json").read_text())
    assert {"bc", "expert"} <= set(ev) and ev["episodes"] == 2
    assert not list(out.glob("policy_*.zip"))  # RL trains on states: no SB3 export
    log = (out / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 2
    # two more epochs on top of the finished two, from the checkpoint
    assert bc_main([*argv, "--epochs", "4", "--resume"]) == 0
    assert len((out / "train_log.csv").read_text().splitlines()) == 1 + 4
    with pytest.raises(ValueError, match="pixel policy"):
        BCPolicy.load(out / "bc_policy.pt")
    # another gap is another input: refused, not trained on silently
    assert bc_main([*argv, "--epochs", "6", "--frame-gap", "5", "--resume"]) == 1
    assert len((out / "train_log.csv").read_text().splitlines()) == 1 + 4


def test_the_pixel_driver_sees_the_frame_and_the_one_gap_steps_earlier(camera_set):
    seen = []

    class Recorder(PixelBCPolicy):
        def act(self, frames):
            seen.append(frames.copy())
            return np.zeros((len(frames), 2))

    driver = pixel_policy_driver(Recorder([SIZE, SIZE, 3], 2, gap=3))
    env = _env(camera_set)
    run = rollout(driver, env, 0, [0, 1], "test", render_size=SIZE)
    assert seen[0].shape == (2, 2, SIZE, SIZE, 3)
    for t in (0, 2, 5):
        for k in (0, 1):
            assert np.array_equal(seen[t][k, 0], run.frames[k][t])
            assert np.array_equal(seen[t][k, 1], run.frames[k][max(0, t - 3)])


def test_bad_pixel_input_is_one_clear_error(camera_set, tmp_path, capsys):
    base = ["--data", str(camera_set), "--output", str(tmp_path / "o")]
    assert bc_main([*base, "--obs-key", CAMERA_KEY, "--dagger-rounds", "1"]) == 1
    assert "--dagger-rounds labels states" in capsys.readouterr().err
    assert bc_main([*base, "--obs-key", "observation.images.side"]) == 1
    err = capsys.readouterr().err
    assert "no feature 'observation.images.side'" in err and CAMERA_KEY in err
    assert not (tmp_path / "o").exists()


def test_the_ego_view_keeps_the_car_in_place_and_turns_the_road_with_it():
    from gymnasium.utils import seeding

    from rlkit.envs.render import CAR, ROAD, render_ego_frame
    from rlkit.envs.sim import RacingSim

    sim = RacingSim(1)
    sim.reset_car(0, seeding.np_random(3)[0])
    size = 64
    frame = render_ego_frame(sim, 0, size)
    car = np.argwhere((frame == CAR).all(axis=-1))
    # the car: centred across, a quarter of the frame above the bottom, pointing up
    assert (
        abs(car[:, 1].mean() + 0.5 - size / 2) < 1 and abs(car[:, 0].mean() + 0.5 - 0.75 * size) < 1
    )
    assert np.ptp(car[:, 0]) > np.ptp(car[:, 1])  # longer than wide: up the frame
    assert (frame[int(0.75 * size) - 6, size // 2] == ROAD).all()  # on the road at the start
    sim.psi[0] += np.pi / 2  # the same place, turned: the car stays, the road turns
    turned = render_ego_frame(sim, 0, size)
    assert np.array_equal(np.argwhere((turned == CAR).all(axis=-1)), car)
    assert (turned != frame).any(axis=-1).mean() > 0.05


def test_bc_from_the_ego_camera(tmp_path):
    root = tmp_path / "ego"
    flags = ["--episodes", "2", "--max-steps", "40", "--camera", str(SIZE), "--camera-view", "ego"]
    assert collect_main([*flags, "--workers", "1", "--output", str(root)]) == 0
    two = tmp_path / "ego2"  # encoded in two workers: the same bytes
    assert collect_main([*flags, "--workers", "2", "--chunk-size", "1", "--output", str(two)]) == 0
    for f in (root / "videos").rglob("*.mp4"):
        assert f.read_bytes() == (two / f.relative_to(root)).read_bytes()
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.ego"]["shape"] == [SIZE, SIZE, 3]
    out = tmp_path / "bc"
    argv = ["--data", str(root), "--output", str(out), *TRAIN, "--obs-key",
            "observation.images.ego", "--epochs", "1"]  # fmt: skip
    assert bc_main(argv) == 0
    assert json.loads((out / "eval.json").read_text())["bc"]["episodes"] == 2


def test_frames_that_do_not_fit_in_memory_stop_before_decoding(camera_set, tmp_path, capsys,
                                                                 monkeypatch):  # fmt: skip
    import rlkit.bc.data as bc_data

    monkeypatch.setattr(bc_data, "_free_memory", lambda: 1_000_000)  # a machine with 1 MB free
    out = tmp_path / "o"
    assert bc_main(["--data", str(camera_set), "--output", str(out), *TRAIN]) == 1
    err = capsys.readouterr().err
    assert "decoding 240 frames" in err and "needs 1.2 MB of memory, 1.0 MB are free" in err
    assert not out.exists()
