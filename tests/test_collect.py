"""Parallel demonstration collection: reproducible, valid LeRobot output, clear failures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from rlkit.cli.collect_demonstrations import main
from rlkit.collect import CollectConfig, CollectError, collect
from rlkit.envs import Expert, RacingConfig, RacingEnv, TrackSpec
from rlkit.lerobot import DatasetReader, validate_dataset
from rlkit.lerobot.env_meta import load_env_config

SMALL = {"max_steps": 120, "noise": 0.1}


def _data_tables(root):
    files = sorted((root / "data").rglob("*.parquet"))
    return [pq.read_table(f) for f in files]


def test_dataset_is_identical_for_any_worker_count_and_chunking(tmp_path):
    a = collect(
        CollectConfig(episodes=6, workers=1, output=str(tmp_path / "w1"), **SMALL), progress=False
    )
    b = collect(
        CollectConfig(episodes=6, workers=2, chunk_size=2, output=str(tmp_path / "w2"), **SMALL),
        progress=False,
    )
    assert a.frames == b.frames and a.workers == 1 and b.workers == 2
    ta, tb = _data_tables(tmp_path / "w1"), _data_tables(tmp_path / "w2")
    assert len(ta) == len(tb) and all(x.equals(y) for x, y in zip(ta, tb, strict=True))
    stats_a = (tmp_path / "w1/meta/stats.json").read_text()
    assert stats_a == (tmp_path / "w2/meta/stats.json").read_text()


def test_output_is_a_valid_lerobot_v3_dataset_that_replays_the_env(tmp_path):
    out = tmp_path / "demos"
    res = collect(
        CollectConfig(episodes=3, workers=1, output=str(out), seed=5, **SMALL), progress=False
    )
    ds = DatasetReader(out)
    assert ds.version == "v3.0" and validate_dataset(out) == []
    assert ds.num_episodes == 3 and ds.num_frames == res.frames
    cols = ds.load_columns(
        ["observation.state", "action", "next.reward", "next.done", "episode_index"]
    )
    env_cfg = load_env_config(out)
    assert env_cfg == RacingConfig(max_episode_steps=120)
    assert cols["observation.state"].shape == (res.frames, env_cfg.obs_dim)
    assert cols["action"].shape == (res.frames, 2) and np.abs(cols["action"]).max() <= 1.0
    assert ds.features["observation.state"]["names"] == env_cfg.obs_names
    # Every episode ends with next.done and only there.
    ends = np.flatnonzero(cols["next.done"])
    assert np.array_equal(cols["episode_index"][ends], np.arange(3))
    # The first frame is the env's reset observation and the expert's clean action on it.
    from gymnasium.utils import seeding

    from rlkit.utils import episode_seed

    env = RacingEnv(config=env_cfg)
    env.reset(seed=0)
    env.unwrapped.np_random, _ = seeding.np_random(episode_seed(5, 0, "demo"))
    env.sim.reset_car(0, env.np_random)
    assert np.array_equal(env.sim.observe()[0], cols["observation.state"][0])
    np.testing.assert_allclose(Expert().act(env), cols["action"][0], rtol=1e-6)
    # Run records next to the data.
    resolved = yaml.safe_load((out / "config.resolved.yml").read_text())
    assert resolved["collect"]["episodes"] == 3 and resolved["collect"]["seed"] == 5
    assert (out / "command.txt").read_text().strip()


def test_preview_distances_shape_the_observation_and_are_recorded(tmp_path):
    out = tmp_path / "dense"
    argv = ["--episodes", "2", "--workers", "1", "--max-steps", "60", "--output", str(out)]
    assert main([*argv, "--preview", "5", "10", "20", "40", "60", "80"]) == 0
    env_cfg = load_env_config(out)
    assert env_cfg.preview == (5.0, 10.0, 20.0, 40.0, 60.0, 80.0) and env_cfg.obs_dim == 23
    ds = DatasetReader(out)
    assert ds.features["observation.state"]["names"][15:21] == [
        f"curvature_{d}m" for d in (5, 10, 20, 40, 60, 80)
    ]
    obs = ds.load_columns(["observation.state"])["observation.state"]
    assert obs.shape == (ds.num_frames, 23) and np.abs(obs[:, 15:21]).max() > 0.1


def test_noise_perturbs_the_driving_but_not_the_recorded_labels(tmp_path):
    clean = collect(
        CollectConfig(episodes=2, workers=1, output=str(tmp_path / "a"), max_steps=80, noise=0.0),
        progress=False,
    )
    noisy = collect(
        CollectConfig(episodes=2, workers=1, output=str(tmp_path / "b"), max_steps=80, noise=0.3),
        progress=False,
    )
    assert clean.frames == noisy.frames
    a = DatasetReader(tmp_path / "a").load_columns(["observation.state", "action"])
    b = DatasetReader(tmp_path / "b").load_columns(["observation.state", "action"])
    assert np.array_equal(a["observation.state"][0], b["observation.state"][0])
    assert np.array_equal(a["action"][0], b["action"][0])  # same state -> same clean label
    assert not np.array_equal(a["observation.state"][5:], b["observation.state"][5:])
    # Recorded actions are the expert's, not the noisy executed ones: they stay smooth.
    assert np.abs(np.diff(b["action"][:79, 1])).max() < 0.6


def test_existing_output_is_refused_then_replaced_with_overwrite(tmp_path):
    out = tmp_path / "demos"
    collect(CollectConfig(episodes=1, workers=1, output=str(out), max_steps=30), progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        collect(CollectConfig(episodes=2, workers=1, output=str(out), max_steps=30), progress=False)
    assert DatasetReader(out).num_episodes == 1
    cfg = CollectConfig(episodes=2, workers=1, output=str(out), max_steps=30, overwrite=True)
    collect(cfg, progress=False)
    assert DatasetReader(out).num_episodes == 2
    assert [p.name for p in tmp_path.iterdir()] == ["demos"]  # no temporary leftovers


def test_a_failing_worker_stops_the_run_with_its_traceback_and_writes_nothing(tmp_path):
    impossible = RacingConfig(max_episode_steps=30, track=TrackSpec(min_corner_radius=1e4))
    cfg = CollectConfig(episodes=4, workers=2, output=str(tmp_path / "demos"))
    with pytest.raises(CollectError, match="no valid track") as err:
        collect(cfg, env_config=impossible, progress=False)
    assert "generate_track" in str(err.value)  # the worker's traceback
    assert list(tmp_path.iterdir()) == []


def test_cli_runs_end_to_end_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "demos"
    rc = main(["--episodes", "3", "--workers", "2", "--max-steps", "60", "--output", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for word in ("episodes", "frames", "episodes/s", "mean return", "lap completion", "wall time"):
        assert word in text
    assert DatasetReader(out).num_episodes == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--episodes", "0"], "episodes must be in [1, 1e7]"),
        (["--workers", "0"], "workers must be in [1, 256]"),
        (["--noise", "-1"], "noise must be in [0, 10]"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--output", str(tmp_path / "x")])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["--episodes", "1", "--workers", "1", "--output", str(locked / "demos")]) == 1
    assert "not writable" in capsys.readouterr().err


def test_output_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["--episodes", "1", "--workers", "1", "--output", str(target), "--overwrite"]) == 1
    assert "is a file, not a LeRobot dataset folder" in capsys.readouterr().err
    assert target.read_text() == "x"


def test_output_below_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert (
        main(["--episodes", "1", "--workers", "1", "--output", str(tmp_path / "file/demos")]) == 1
    )
    assert "is a file" in capsys.readouterr().err


def test_a_killed_worker_process_fails_the_run_instead_of_hanging(tmp_path, monkeypatch):
    import signal

    import rlkit.shm_pool as shm_pool

    real = shm_pool.imap_watching_workers

    def kill_a_worker_meanwhile(pool, jobs):  # the real pool, a real SIGKILL
        # Once the first episode is back the workers are running (39 episodes to go): kill
        # one then, whatever the machine's load, instead of after a fixed delay.
        results = real(pool, jobs)
        yield next(results)
        os.kill(pool._pool[0].pid, signal.SIGKILL)
        yield from results

    monkeypatch.setattr(shm_pool, "imap_watching_workers", kill_a_worker_meanwhile)
    cfg = CollectConfig(episodes=40, workers=2, chunk_size=1, output=str(tmp_path / "d"))
    with pytest.raises(CollectError, match="died with exit code"):
        collect(cfg, progress=False)
    assert list(tmp_path.iterdir()) == []


DIES_HOLDING_A_QUEUE_LOCK = """
import os, signal, sys
from rlkit.shm_pool import WorkerDied, map_unordered

QUEUE, LOCK = sys.argv[1].split(".")

def die_holding_a_queue_lock(i):
    if i == 3:  # a real SIGKILL while this worker holds a lock of the pool's queues
        frame = sys._getframe()
        while QUEUE not in frame.f_locals:
            frame = frame.f_back
        getattr(frame.f_locals[QUEUE], LOCK).acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    return {"i": i}

if __name__ == "__main__":
    try:
        for _ in map_unordered(die_holding_a_queue_lock, [(i,) for i in range(50)], 2, "t"):
            pass
    except WorkerDied as e:
        print("WorkerDied:", e)
"""


@pytest.mark.parametrize("lock", ["outqueue._wlock", "inqueue._rlock"])  # in put / in get
def test_a_worker_killed_while_holding_a_queue_lock_does_not_hang_the_pool(tmp_path, lock):
    """CPython's Pool.terminate blocks forever on a queue lock a killed worker held; the
    pool is unjammed before it is terminated."""
    import subprocess
    import sys

    script = tmp_path / "dies.py"
    script.write_text(DIES_HOLDING_A_QUEUE_LOCK)
    cmd = [sys.executable, str(script), lock]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert "WorkerDied: worker process" in out.stdout, out.stderr
    assert "exit code -9" in out.stdout


def test_episode_summaries_are_taken_when_the_episode_ends():
    from rlkit.rollout import expert_driver, rollout

    cfg = RacingConfig(max_episode_steps=400)
    run = rollout(expert_driver(), cfg, 1, range(8), "demo", noise=0.8)
    crashed = np.flatnonzero(run.terminated)
    assert crashed.size, "heavy noise should make some cars leave the track"
    for k in crashed:
        # The cars kept moving after their episodes ended; laps must not count that.
        length = generate_track_length(run.episodes[k])
        progress = (run.returns[k] + cfg.crash_penalty) * cfg.progress_unit
        assert abs(run.laps[k] * length - progress) < 1e-3 * length


def generate_track_length(episode):
    from gymnasium.utils import seeding

    from rlkit.envs import RacingSim
    from rlkit.utils import episode_seed

    sim = RacingSim(1)
    sim.reset_car(0, seeding.np_random(episode_seed(1, episode, "demo"))[0])
    return sim.tracks[0].length


def test_results_come_back_through_shared_memory_or_the_pipe_and_nothing_leaks(
    tmp_path, monkeypatch
):
    import rlkit.shm_pool as shm_pool

    def shm_blocks():  # SharedMemory names start with psm_ (the pool's semaphores: sem.*)
        return {p.name for p in Path("/dev/shm").glob("psm_*")}

    before = shm_blocks()
    cfg = dict(episodes=6, workers=2, chunk_size=2, **SMALL)
    collect(CollectConfig(output=str(tmp_path / "shm"), **cfg), progress=False)
    assert shm_blocks() == before  # every block was unlinked by the parent
    # No usable shared memory (a container with a tiny /dev/shm): the pipe carries the arrays.
    monkeypatch.setattr(shm_pool, "SHM_DIR", str(tmp_path / "no-such-dir"))
    collect(CollectConfig(output=str(tmp_path / "pipe"), **cfg), progress=False)
    ta, tb = _data_tables(tmp_path / "shm"), _data_tables(tmp_path / "pipe")
    assert all(x.equals(y) for x, y in zip(ta, tb, strict=True))


def test_shared_memory_round_trip_keeps_every_array():
    from rlkit.shm_pool import from_shared, to_shared

    rng = np.random.default_rng(0)
    chunk = {
        "indices": [3, 4],
        "lengths": np.array([5, 7]),
        "frames": {"a": rng.standard_normal((12, 3)).astype(np.float32), "b": np.ones(12, bool)},
        "stats": {"a": {"mean": rng.standard_normal((2, 3))}},
    }
    msg = to_shared(dict(chunk))
    assert set(msg) == {"indices", "shared"}  # only the skeleton travels through the pipe
    back = from_shared(msg)
    assert back["indices"] == [3, 4] and np.array_equal(back["lengths"], chunk["lengths"])
    for key in ("a", "b"):
        assert back["frames"][key].dtype == chunk["frames"][key].dtype
        assert np.array_equal(back["frames"][key], chunk["frames"][key])
    assert np.array_equal(back["stats"]["a"]["mean"], chunk["stats"]["a"]["mean"])
