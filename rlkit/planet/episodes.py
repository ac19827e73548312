"""Episodes of a pixel env: random or CEM-planned through the world model's belief."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlkit.planet.dataset import obs_to_model
from rlkit.planet.envs import PixelEnv
from rlkit.planet.model import WorldModel
from rlkit.planet.planner import CEMPlanner, PlannerConfig
from rlkit.planet.storage import EpisodeStorage
from rlkit.utils import atomic_path

__all__ = ["Episode", "make_planner", "planning_threads", "run_episode", "write_openloop_png"]


@contextlib.contextmanager
def planning_threads(device: torch.device) -> Iterator[None]:
    """One torch thread while planning on CPU: CEM runs many small batched ops, which
    bench/bench_world_model.py measured several times slower on 2 threads than on 1."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass
class Episode:
    obs: list[np.ndarray] = field(default_factory=list)
    action: list[np.ndarray] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    terminal: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)

    def add(
        self, obs: np.ndarray, action: np.ndarray, reward: float, term: bool, trunc: bool
    ) -> None:
        """Record one step: the action taken, what followed it."""
        self.obs.append(obs)
        self.action.append(action)
        self.reward.append(reward)
        self.terminal.append(term)
        self.truncated.append(trunc)

    @property
    def ret(self) -> float:
        return float(sum(self.reward))

    def save(self, storage: EpisodeStorage) -> Path:
        return storage.add_episode(
            np.stack(self.obs), np.stack(self.action), self.reward, self.terminal, self.truncated
        )


def run_episode(
    env: PixelEnv,
    seed: int,
    model: WorldModel | None = None,
    planner: CEMPlanner | None = None,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Episode:
    """One episode: uniform random actions (no model), or CEM through ``model``'s belief.

    ``noise`` adds N(0, noise^2) to the planned action (collection); 0 for evaluation.
    """
    rng = rng or np.random.default_rng(seed)
    ep = Episode()
    obs = env.reset(seed=seed)
    ep.obs.append(obs)
    device = next(model.parameters()).device if model is not None else None
    state = model.initial_state(1) if model is not None else None
    prev = torch.zeros(1, env.action_dim, device=device) if model is not None else None
    while True:
        if model is None or planner is None:
            a = rng.uniform(-1.0, 1.0, env.action_dim).astype(np.float32)
        else:
            with torch.no_grad():
                embed = model.encoder(obs_to_model(torch.from_numpy(obs).to(device))[None])
                state, _ = model.obs_step(state, prev, embed)
                a = planner.plan(state, device).cpu().numpy()
            if noise > 0:
                a = a + noise * rng.standard_normal(env.action_dim)
            a = np.clip(a, -1.0, 1.0).astype(np.float32)
            prev = torch.from_numpy(a).to(device)[None]
        obs, r, term, trunc = env.step(a)
        ep.add(obs, a, r, term, trunc)
        if term or trunc:
            return ep


def make_planner(model: WorldModel, cfg: PlannerConfig, seed: int) -> CEMPlanner:
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return CEMPlanner(
        lambda s, a: model.img_step(s, a),
        lambda s: model.reward(s.features()),
        model.action_dim,
        cfg,
        gen,
    )


def write_openloop_png(
    model: WorldModel, ep: Episode, path: Path, context: int = 5, frames: int = 16
) -> None:
    """Real frames (top row) against the model's (bottom row): the first ``context`` frames
    reconstructed from the observations, the rest predicted open loop from the actions only.
    A header names the two parts, a red line marks where the prediction starts, and a left
    column names the rows."""
    from PIL import Image, ImageDraw

    device = next(model.parameters()).device
    n = min(len(ep.action), context + frames - 1)
    obs = torch.from_numpy(np.stack(ep.obs[: n + 1])).to(device)[:, None]
    act = torch.from_numpy(np.stack(ep.action[:n])).to(device)[:, None]
    seen = min(context, n + 1)
    pred = model.open_loop(obs_to_model(obs), act, seen)  # (n+1, 1, 3, H, W)
    pred = ((pred[:, 0].permute(0, 2, 3, 1) + 0.5) * 255).round().byte().cpu().numpy()
    real = np.stack(ep.obs[: n + 1])
    grid = np.concatenate([np.concatenate(list(real), 1), np.concatenate(list(pred), 1)], 0)
    size, head, left = real.shape[1], 14, 44
    canvas = Image.new("RGB", (left + grid.shape[1], head + grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (left, head))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, head + size // 2 - 5), "real", fill="black")
    draw.text((2, head + size + size // 2 - 5), "model", fill="black")
    draw.text((left + 2, 1), f"reconstruction ({seen} seen)", fill="black")
    if seen <= n:
        x = left + seen * size
        draw.text((x + 3, 1), "open-loop prediction (actions only)", fill="black")
        draw.line([(x - 1, 0), (x - 1, canvas.height)], fill=(220, 0, 0), width=2)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
