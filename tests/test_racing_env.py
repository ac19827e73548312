"""The racing env: API checks, determinism, single-vs-batched equality, physics, expert."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import rlkit  # noqa: F401  (registers rlkit/Racing-v0)
from rlkit.envs import Expert, RacingConfig, RacingEnv, RacingSim, TrackSpec, generate_track


def _rollout(env: RacingEnv, actions: np.ndarray, seed: int):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        obs, reward, term, trunc, _ = env.step(a)
        out.append(np.concatenate([obs, [reward, term, trunc]]))
        if term or trunc:
            obs, _ = env.reset()
            out.append(obs)
    return out


def test_gymnasium_check_env_passes_without_warnings():
    env = gym.make("rlkit/Racing-v0", render_mode="rgb_array", render_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped)


def test_sb3_check_env_passes_without_warnings():
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(RacingEnv(), warn=True)


def test_same_seed_same_rollout_and_different_seed_differs():
    actions = np.random.default_rng(0).uniform(-1, 1, (200, 2))
    a = _rollout(RacingEnv(max_episode_steps=60), actions, seed=7)
    b = _rollout(RacingEnv(max_episode_steps=60), actions, seed=7)
    c = _rollout(RacingEnv(max_episode_steps=60), actions, seed=8)
    assert len(a) == len(b)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_observations_stay_inside_the_space():
    env = RacingEnv(max_episode_steps=100)
    rng = np.random.default_rng(1)
    obs, _ = env.reset(seed=1)
    for _ in range(400):
        assert env.observation_space.contains(obs), obs
        obs, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 2))
        if term or trunc:
            obs, _ = env.reset()


def test_batched_cars_equal_single_envs_exactly():
    from rlkit.envs import RacingVecEnv

    n, seed, steps = 4, 11, 260
    kw = {"max_episode_steps": 90}  # several auto-resets; random actions also crash
    vec = RacingVecEnv(n, seed=seed, **kw)
    singles = [RacingEnv(**kw) for _ in range(n)]
    actions = np.random.default_rng(3).uniform(-1, 1, (steps, n, 2)).astype(np.float32)
    actions[:, :, 1] = np.abs(actions[:, :, 1])  # mostly forward, so cars reach corners
    obs_v = vec.reset()
    obs_s = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(singles)])
    assert np.array_equal(obs_v, obs_s)
    n_done = 0
    for t in range(steps):
        obs_v, rew_v, done_v, infos = vec.step(actions[t])
        for i, env in enumerate(singles):
            obs, rew, term, trunc, _ = env.step(actions[t, i])
            assert np.float32(rew) == rew_v[i], (t, i)
            assert (term or trunc) == done_v[i], (t, i)
            if term or trunc:
                n_done += 1
                assert np.array_equal(infos[i]["terminal_observation"], obs)
                assert infos[i]["TimeLimit.truncated"] == trunc
                assert infos[i]["episode"]["l"] == env.sim.steps[0]
                obs, _ = env.reset()
            else:
                assert infos[i] == {}
            assert np.array_equal(obs_v[i], obs), (t, i)
    assert n_done >= n * 2


def test_pickle_round_trip_continues_identically():
    env = RacingEnv()
    env.reset(seed=4)
    expert = Expert()
    for _ in range(50):
        env.step(expert.act(env))
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(50):
        a = expert.act(env)
        assert np.array_equal(a, expert.act(clone))
        out_a, out_b = env.step(a), clone.step(a)
        assert np.array_equal(out_a[0], out_b[0]) and out_a[1:4] == out_b[1:4]


def test_track_is_deterministic_and_meets_constraints():
    spec = TrackSpec()
    for seed in range(20):
        t = generate_track(seed, spec)
        assert np.array_equal(t.xy, generate_track(seed, spec).xy)
        assert spec.length_range[0] <= t.length <= spec.length_range[1]
        assert np.abs(t.curvature).max() <= spec.max_curvature
        steps = np.linalg.norm(np.roll(t.xy, -1, axis=0) - t.xy, axis=1)
        assert np.allclose(steps, t.ds, rtol=0.02)  # arc-length resampling, closed loop
        assert np.allclose(np.linalg.norm(t.left - t.right, axis=1), 2 * spec.half_width)
    assert not np.array_equal(generate_track(1).xy, generate_track(2).xy)


def _brute_force_rays(sim: RacingSim, i: int) -> np.ndarray:
    """Every boundary segment of the track, float64, no window."""
    track = sim.tracks[i]
    out = []
    p = np.array([sim.x[i], sim.y[i]])
    for ang in sim.psi[i] + sim.ray_angles:
        d = np.array([np.cos(ang), np.sin(ang)])
        best = sim.config.ray_range
        for bound in (track.left, track.right):
            a, e = bound, np.roll(bound, -1, axis=0) - bound
            w = a - p
            den = d[0] * e[:, 1] - d[1] * e[:, 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (w[:, 0] * e[:, 1] - w[:, 1] * e[:, 0]) / den
                u = (w[:, 0] * d[1] - w[:, 1] * d[0]) / den
            ok = (t > 0) & (u >= 0) & (u <= 1)
            if ok.any():
                best = min(best, t[ok].min())
        out.append(best)
    return np.asarray(out)


def test_rays_match_brute_force_intersection():
    sim = RacingSim(6)
    rng = np.random.default_rng(0)
    for i in range(6):
        sim.reset_car(i, np.random.default_rng(100 + i))
    expert = Expert()
    for step in range(300):
        a = expert.act_sim(sim)
        a[:, 0] += rng.normal(0, 0.3, 6)  # wander across the road
        sim.step(a)
        if step % 10 == 0:
            rays = sim._rays(np.arange(6))
            for i in range(6):
                if not sim.off_track[i]:
                    np.testing.assert_allclose(rays[i], _brute_force_rays(sim, i), atol=2e-3)


def test_full_throttle_leaves_the_track_but_expert_laps():
    cfg = RacingConfig(max_episode_steps=700)
    n = 12
    sims = RacingSim(n, cfg), RacingSim(n, cfg)
    for sim in sims:
        for i in range(n):
            sim.reset_car(i, np.random.default_rng(500 + i))
    expert = Expert()
    crashed = [np.zeros(n, bool), np.zeros(n, bool)]
    for _ in range(cfg.max_episode_steps):
        greedy = expert.act_sim(sims[0])
        greedy[:, 1] = 1.0  # flat out
        for k, a in enumerate((greedy, expert.act_sim(sims[1]))):
            _, term, _, _ = sims[k].step(a)
            crashed[k] |= term
    assert crashed[0].mean() > 0.5  # too fast into corners: the car slides off
    assert not crashed[1].any()
    assert np.all(sims[1].laps >= 1)


def test_faster_driving_earns_more():
    slow, fast = Expert(grip_margin=0.5), Expert()
    returns = []
    for expert in (slow, fast):
        env = RacingEnv(max_episode_steps=400)
        env.reset(seed=3)
        total, done = 0.0, False
        while not done:
            _, r, term, trunc, info = env.step(expert.act(env))
            total += r
            done = term or trunc
        assert not info["off_track"]
        returns.append(total)
    assert returns[1] > returns[0] * 1.1


def test_lap_time_reported_when_a_lap_completes():
    env = RacingEnv(max_episode_steps=1000)
    env.reset(seed=2)
    expert = Expert()
    lap_times = []
    for _ in range(1000):
        _, _, term, trunc, info = env.step(expert.act(env))
        if "lap_time" in info:
            lap_times.append(info["lap_time"])
            assert info["laps"] >= 1.0
        if term or trunc:
            break
    assert lap_times and 10.0 < lap_times[0] < 60.0
    assert env.sim.first_lap_time[0] == lap_times[0]


def test_render_shows_track_and_car_at_any_size():
    env = RacingEnv(render_mode="rgb_array", render_size=64)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    red = (frame[..., 0] > 180) & (frame[..., 1] < 80)
    assert red.sum() >= 2  # the car
    grey = (np.abs(frame.astype(int) - [96, 96, 100]).sum(axis=-1) == 0).sum()
    assert grey > 200  # the road
    big = RacingEnv(render_mode="rgb_array", render_size=200)
    big.reset(seed=0)
    assert big.render().shape == (200, 200, 3)
    assert RacingEnv().render() is None  # no render_mode


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="n_rays must be >= 1"):
        RacingEnv(n_rays=0)
    with pytest.raises(ValueError, match="render_mode"):
        RacingEnv(render_mode="ansi")


def test_edge_moves_where_the_car_leaves_the_track_and_nothing_else():
    hw = TrackSpec().half_width
    steps = {}
    for edge in (1.0, 0.9):
        sim = RacingSim(1, RacingConfig(edge=edge))
        sim.reset_car(0, np.random.default_rng(7))
        lateral = []
        for _ in range(400):  # a little left lock at a steady throttle: the car drifts off
            _, term, _, _ = sim.step(np.array([[0.3, 0.3]]))
            lateral.append(abs(sim.lateral[0]))
            if term[0]:
                break
        assert term[0] and sim.off_track[0]
        steps[edge] = lateral
        assert lateral[-1] > edge * hw and all(x <= edge * hw for x in lateral[:-1])
    near, far = steps[0.9], steps[1.0]
    assert len(near) < len(far)
    assert near == far[: len(near)]  # the same physics until the nearer line ends it
    with pytest.raises(ValueError, match=r"edge must be in \(0, 1\]"):
        RacingConfig(edge=1.5)
