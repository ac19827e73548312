"""render_mode="human": a pygame window drawn on every reset/step, and train_rl.py --render.

Headless: SDL's dummy video driver gives pygame a real display surface without a screen,
so what the window shows can be read back and compared with the rgb_array frame.
"""

from __future__ import annotations

import sys
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import DependencyNotInstalled
from gymnasium.utils import seeding

import rlkit  # noqa: F401  (registers rlkit/Racing-v0)
from rlkit.cli.train_rl import main
from rlkit.envs.racing import RacingEnv
from rlkit.envs.render import PygameNotInstalled, PygameWindow
from rlkit.envs.sim import RacingConfig, RacingSim
from rlkit.rl import RLConfig
from rlkit.utils import episode_seed

ACTIONS = [np.array([0.3, 1.0], dtype=np.float32)] * 5 + [np.array([-0.5, 0.5], np.float32)] * 3


@pytest.fixture(autouse=True)
def headless(monkeypatch):
    """Off-screen SDL drivers (read when the display opens), and no window left open."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    yield
    if "pygame" in sys.modules and sys.modules["pygame"] is not None:
        sys.modules["pygame"].display.quit()


@pytest.fixture
def pygame():
    return pytest.importorskip("pygame")


def window_pixels(pygame) -> np.ndarray:
    """What the display shows, as a (row, col, rgb) uint8 array like a rendered frame."""
    return pygame.surfarray.array3d(pygame.display.get_surface()).swapaxes(0, 1)


def test_human_env_draws_every_reset_and_step_and_closes_the_window(pygame):
    env = RacingEnv(render_mode="human", render_size=64)
    twin = RacingEnv(render_mode="rgb_array", render_size=64)  # same seed, same frames
    assert env.window is None  # pygame is only touched by the first frame
    env.reset(seed=3)
    twin.reset(seed=3)
    assert pygame.display.get_init() and pygame.display.get_surface().get_size() == (64, 64)
    shown = window_pixels(pygame)
    np.testing.assert_array_equal(shown, twin.render())
    assert len(np.unique(shown.reshape(-1, 3), axis=0)) >= 3  # grass, road, car: not blank
    for action in ACTIONS:
        env.step(action)
        twin.step(action)
        np.testing.assert_array_equal(window_pixels(pygame), twin.render())
    assert not np.array_equal(window_pixels(pygame), shown)  # the car moved
    assert env.render() is None
    env.close()
    assert env.window is None and not pygame.display.get_init()
    env.close()  # twice is fine


def test_human_frames_are_paced_at_render_fps(pygame):
    env = RacingEnv(render_mode="human", render_size=32)
    assert "human" in env.metadata["render_modes"] and env.metadata["render_fps"] == 20
    env.reset(seed=0)
    t0 = time.perf_counter()
    for action in ACTIONS[:6]:
        env.step(action)
    # six frames after the first at 20 fps: at least ~0.3 s (a busy machine is only slower)
    assert time.perf_counter() - t0 >= 0.25
    env.close()


def test_default_sizes_per_render_mode_and_bad_size():
    assert RacingEnv(render_mode="human").render_size == 512
    assert RacingEnv(render_mode="rgb_array").render_size == 96
    assert RacingEnv(render_mode="human", render_size=100).render_size == 100
    with pytest.raises(ValueError, match="render_size must be >= 8"):
        RacingEnv(render_mode="human", render_size=4)
    with pytest.raises(ValueError, match="render_mode must be one of"):
        RacingEnv(render_mode="ansi")


def test_gym_make_human_passes_the_render_checks(pygame):
    env = gym.make("rlkit/Racing-v0", render_mode="human", render_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the passive env checker warns on a bad render()
        env.reset(seed=0)
        env.step(env.action_space.sample())
        assert env.render() is None
    assert env.unwrapped.window.is_open
    assert pygame.display.get_surface().get_size() == (32, 32)
    env.close()
    assert not pygame.display.get_init()


def test_closing_the_window_ends_the_live_view(pygame):
    env = RacingEnv(render_mode="human", render_size=32)
    env.reset(seed=0)
    pygame.event.post(pygame.event.Event(pygame.QUIT))  # the user clicks the close button
    env.step(ACTIONS[0])
    assert not env.window.is_open and not pygame.display.get_init()
    env.step(ACTIONS[0])  # the env keeps stepping and does not reopen the window
    assert not pygame.display.get_init()
    env.close()


def test_window_scales_a_smaller_frame(pygame):
    window = PygameWindow(32, fps=1000)
    frame = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert window.show(frame)
    np.testing.assert_array_equal(window_pixels(pygame), frame.repeat(2, 0).repeat(2, 1))
    window.close()
    assert not window.show(frame) and not pygame.display.get_init()


def test_missing_pygame_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # `import pygame` now raises ImportError
    env = RacingEnv(render_mode="human", render_size=32)  # constructing needs no pygame
    with pytest.raises(PygameNotInstalled, match=r"needs pygame: pip install pygame") as info:
        env.reset(seed=0)
    assert isinstance(info.value, ImportError) and isinstance(info.value, DependencyNotInstalled)
    assert "rlkit[human]" in str(info.value)
    env.close()  # nothing was opened


# ------------------------------------------------------------------ train_rl.py --render human
@pytest.fixture(scope="module")
def ppo_zip(tmp_path_factory):
    """An untrained PPO saved like a train_rl.py model (the CLI only loads and drives it)."""
    from stable_baselines3 import PPO

    from rlkit.envs.vec_env import RacingVecEnv

    path = tmp_path_factory.mktemp("model") / "model.zip"
    model = PPO(
        "MlpPolicy", RacingVecEnv(2), n_steps=16, batch_size=32, policy_kwargs={"net_arch": [16]}
    )
    model.save(str(path))
    return path


def eval_argv(model, episodes: int = 2) -> list[str]:
    return [
        "--algo",
        "ppo",
        "--eval-only",
        str(model),
        "--render",
        "human",
        "--test-episodes",
        str(episodes),
        "--max-episode-steps",
        "8",
    ]


def record_shown_tracks(monkeypatch) -> list[tuple[int, int]]:
    """Patch the env's human drawing to log (track seed, frame count) of what is shown."""
    shown: list[tuple[int, int]] = []
    draw = RacingEnv._render_human

    def spy(self):
        draw(self)
        shown.append((self.track.seed, int(self.sim.steps[0])))

    monkeypatch.setattr(RacingEnv, "_render_human", spy)
    return shown


def test_eval_only_render_human_shows_the_evaluation_tracks(ppo_zip, pygame, monkeypatch, capsys):
    shown = record_shown_tracks(monkeypatch)
    assert main(eval_argv(ppo_zip)) == 0
    assert "expert" in capsys.readouterr().out  # the usual table follows the live view
    assert not pygame.display.get_init()  # the window is closed again
    # The same tracks as the table's episodes: evaluate()'s car i, seeded by episode_seed.
    expected = []
    for i in range(2):
        sim = RacingSim(1, RacingConfig(max_episode_steps=8))
        sim.reset_car(0, seeding.np_random(episode_seed(0, i, "test"))[0])
        expected.append(sim.tracks[0].seed)
    seeds = [seed for seed, _ in shown]
    assert sorted(set(seeds), key=seeds.index) == expected
    assert all(steps <= 8 for _, steps in shown) and len(shown) > 2  # reset + steps drawn


def test_eval_only_stops_watching_when_the_window_is_closed(ppo_zip, pygame, monkeypatch, capsys):
    shown = record_shown_tracks(monkeypatch)
    pygame.display.init()
    pygame.event.post(pygame.event.Event(pygame.QUIT))  # queued before the window opens
    assert main(eval_argv(ppo_zip, episodes=3)) == 0
    assert "expert" in capsys.readouterr().out  # all 3 episodes are still evaluated
    assert len({seed for seed, _ in shown}) == 1  # but only the first one was watched


def test_render_human_needs_eval_only(ppo_zip, monkeypatch, capsys):
    with pytest.raises(ValueError, match="only works with --eval-only"):
        RLConfig(render="human")
    with pytest.raises(SystemExit) as exit_info:
        main(["--render", "human", "--timesteps", "64"])
    assert exit_info.value.code == 2 and "--eval-only" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pygame", None)
    assert main(eval_argv(ppo_zip)) == 1  # one clear line, no traceback
    assert "needs pygame: pip install pygame" in capsys.readouterr().err
