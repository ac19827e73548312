"""``bench_world_model.py --ablation``: which model and loss changes make the world model learn
faster per CPU-minute, measured on fixed data so that only the model side differs.

Data (made once, kept in ``--work``): pixel-Pendulum episodes driven by the CEM planner on
the true dynamics with N(0, 0.3) action noise (the states a good planner visits, swing-ups
included) plus random-policy episodes -- 24 to train on, 6 held out.

Each arm trains a fresh model (same seed, same batch draws) for ``--minutes`` of wall clock
on one torch thread, two arms at a time on a 2-core machine (interleaved so that both
halves of every pair share the same load). Every minute and at the end it scores the model
the way the planner uses it, on every held-out window: 5 frames of context through the
posterior, then 12 steps open loop through the prior with the recorded actions:

- ``reward MSE``: predicted vs true reward over the 12 imagined steps (what CEM ranks by);
- ``return error``: |sum of predicted - sum of true rewards| over the 12 steps;
- ``frame MSE``: imagined frames vs the real ones (per pixel, model range [-0.5, 0.5]).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlkit.planet.dataset import EpisodeDataset, batch_to_device, obs_to_model
from rlkit.planet.envs import make_pixel_env
from rlkit.planet.episodes import Episode
from rlkit.planet.model import ModelSizes, State, WorldModel
from rlkit.planet.planner import CEMPlanner, PlannerConfig
from rlkit.planet.storage import EpisodeStorage, load_episode
from rlkit.utils import episode_seed

__all__ = ["ARMS", "ablation_run", "print_ablation"]

ACTION_REPEAT, CONTEXT, HORIZON = 4, 5, 12
TRAIN_PLANNED, TRAIN_RANDOM, TEST_PLANNED, TEST_RANDOM = 18, 6, 5, 1

_BASE = {"bf16": False, "kl_balance": 0.0, "free_nats": 3.0, "batch": 16, "seq": 32}
#: Arm -> settings: bf16 convs, KL balance (0: PlaNet's KL), free nats, batch, seq len.
ARMS: dict[str, dict[str, Any]] = {
    "fp32, PlaNet loss (before)": _BASE,
    "bf16 convs": {**_BASE, "bf16": True},
    "bf16, KL balance 0.8": {**_BASE, "bf16": True, "kl_balance": 0.8},
    "bf16, KL balance 0.8, free nats 1": {**_BASE, "bf16": True, "kl_balance": 0.8,
                                          "free_nats": 1.0},
    "bf16, KL balance 0.8, B 32 x L 16": {**_BASE, "bf16": True, "kl_balance": 0.8,
                                          "batch": 32, "seq": 16},
    "bf16, B 32 x L 16": {**_BASE, "bf16": True, "batch": 32, "seq": 16},
}  # fmt: skip


def _truth_episode(seed: int, noise: float) -> Episode:
    """One pendulum episode driven by CEM on the true dynamics (+ noise), frames recorded."""
    from world_model_learning import pendulum_truth

    env = make_pixel_env("pendulum", ACTION_REPEAT)
    transition, reward = pendulum_truth(ACTION_REPEAT)
    gen = torch.Generator().manual_seed(seed)
    planner = CEMPlanner(transition, reward, 1, PlannerConfig(12, 300, 30, 5), gen)
    rng = np.random.default_rng(seed)
    ep = Episode()
    ep.obs.append(env.reset(seed=seed))
    while True:
        th, thdot = env.env.unwrapped.state
        a = planner.plan(torch.tensor([[th, thdot, 0.0]], dtype=torch.float32)).numpy()
        a = np.clip(a + noise * rng.standard_normal(1), -1, 1).astype(np.float32)
        obs, r, term, trunc = env.step(a)
        ep.add(obs, a, r, term, trunc)
        if term or trunc:
            env.close()
            return ep


def _random_episode(seed: int) -> Episode:
    from rlkit.planet.episodes import run_episode

    env = make_pixel_env("pendulum", ACTION_REPEAT)
    ep = run_episode(env, seed)
    env.close()
    return ep


def make_data(work: Path) -> tuple[Path, Path]:
    """The train and test episode folders (made once; reused when complete)."""
    torch.set_num_threads(1)
    folders = {"train": (TRAIN_PLANNED, TRAIN_RANDOM), "test": (TEST_PLANNED, TEST_RANDOM)}
    for name, (planned, random_) in folders.items():
        storage = EpisodeStorage(work / name)
        have = len(storage.indexed())
        if have == planned + random_:
            continue
        if have:
            raise SystemExit(f"{work / name} holds {have} episodes, not {planned + random_}")
        stream = "demo" if name == "train" else "test"
        for j in range(planned):
            _truth_episode(episode_seed(0, j, stream), 0.3).save(storage)
        for j in range(random_):
            _random_episode(episode_seed(0, 500 + j, stream)).save(storage)
    return work / "train", work / "test"


def _windows(test: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every held-out window (stride 4): frames (C+H, W, 3, 64, 64), actions (C+H-1, W, A),
    true rewards of the imagined steps (H, W)."""
    obs, act, rew = [], [], []
    for _, path in EpisodeStorage(test).indexed():
        ep = load_episode(path)
        n = len(ep["action"])
        for t0 in range(0, n - CONTEXT - HORIZON + 1, 4):
            obs.append(ep["obs"][t0 : t0 + CONTEXT + HORIZON])
            act.append(ep["action"][t0 : t0 + CONTEXT + HORIZON - 1])
            rew.append(ep["reward"][t0 + CONTEXT - 1 : t0 + CONTEXT - 1 + HORIZON])
    to_t = lambda xs: torch.from_numpy(np.stack(xs, axis=1))  # noqa: E731
    return obs_to_model(to_t(obs)), to_t(act), to_t(rew)


@torch.no_grad()
def score(model: WorldModel, windows: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Open-loop prediction quality on the held-out windows (see the module docstring)."""
    obs, act, rew = windows
    model.eval()
    posts, _ = model.observe(model.encode(obs[:CONTEXT]), act[: CONTEXT - 1])
    last = State(*(f[-1] for f in posts))
    imagined = model.imagine(last, act[CONTEXT - 1 :], sample=False)
    feats = imagined.features()
    pred_r = model.reward(feats)
    frames = model.decode(feats).clamp(-0.5, 0.5)
    model.train()
    return {
        "reward_mse": float((pred_r - rew).square().mean()),
        "return_error": float((pred_r.sum(0) - rew.sum(0)).abs().mean()),
        "frame_mse": float((frames - obs[CONTEXT:]).square().mean()),
    }


def train_arm(name: str, train: Path, test: Path, minutes: float, seed: int) -> dict[str, Any]:
    """One arm: a fresh model trained for ``minutes`` on one thread, scored every minute."""
    torch.set_num_threads(1)
    arm = ARMS[name]
    torch.manual_seed(seed)
    model = WorldModel(1, ModelSizes(), bf16_convs=arm["bf16"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)
    storage = EpisodeStorage(train, workers=1)
    data = EpisodeDataset(storage, arm["seq"], arm["batch"], 100, seed=seed)
    windows = _windows(test)
    curve, steps, t0 = [], 0, time.perf_counter()
    next_score = 60.0
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= next_score or elapsed >= 60 * minutes:
            curve.append({"minutes": elapsed / 60, "steps": steps, **score(model, windows)})
            next_score += 60.0
            t0 += time.perf_counter() - t0 - elapsed  # scoring time is not training time
            if elapsed >= 60 * minutes:
                break
        data.set_iteration(steps // 100)
        batch = data.sample_batch(first_index=(steps % 100) * arm["batch"], reuse=True)
        loss, _ = model.loss(batch_to_device(batch, torch.device("cpu")), arm["free_nats"],
                             arm["kl_balance"])  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1000.0)
        opt.step()
        steps += 1
    return {"arm": name, **arm, "steps": steps, "steps_per_s": steps / (60 * minutes),
            "final": curve[-1], "curve": curve}  # fmt: skip


def ablation_run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work or "/tmp/rlkit-bench-wm-ablation")
    work.mkdir(parents=True, exist_ok=True)
    print(f"data in {work} ...", flush=True)
    train, test = make_data(work)
    minutes = args.minutes or 5.0
    names = list(ARMS)
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, Any] = {}
    with cf.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        for i in range(0, len(names), 2):  # two arms at a time, one thread each
            pair = names[i : i + 2]
            print(f"training {' | '.join(pair)} ({minutes:g} min) ...", flush=True)
            futures = [pool.submit(train_arm, n, train, test, minutes, 0) for n in pair]
            for f in futures:
                r = f.result()
                results[r["arm"]] = r
    return {
        "settings": {
            "minutes_per_arm": minutes,
            "threads_per_arm": 1,
            "arms_at_once": 2,
            "train_episodes": TRAIN_PLANNED + TRAIN_RANDOM,
            "test_episodes": TEST_PLANNED + TEST_RANDOM,
            "context": CONTEXT,
            "horizon": HORIZON,
            "work": str(work),
        },  # fmt: skip
        "arms": [results[n] for n in names],
    }


def print_ablation(report: dict[str, Any]) -> None:
    st = report["settings"]
    print(f"\nWorld model ablation: {st['minutes_per_arm']:g} min per arm, 1 thread, 2 arms at "
          f"once; open loop {st['horizon']} steps after {st['context']} context frames, "
          f"{st['test_episodes']} held-out episodes")  # fmt: skip
    print(f"{'arm':<38} {'steps':>6} {'steps/s':>7} {'reward MSE':>10} {'return err':>10} "
          f"{'frame MSE':>9}")  # fmt: skip
    for a in report["arms"]:
        f = a["final"]
        print(f"{a['arm']:<38} {a['steps']:>6} {a['steps_per_s']:>7.2f} {f['reward_mse']:>10.2f} "
              f"{f['return_error']:>10.1f} {f['frame_mse']:>9.5f}")  # fmt: skip
