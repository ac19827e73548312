"""World model shapes and learning, and the CEM planner on a known model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlkit.planet.dataset import Batch, batch_to_device
from rlkit.planet.model import PRESETS, ModelSizes, WorldModel
from rlkit.planet.planner import CEMPlanner, PlannerConfig

TINY = ModelSizes(cnn_depth=4, deter=16, stoch=4, hidden=16)


def random_batch(L: int = 6, B: int = 3, A: int = 2, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    host = Batch(
        rng.integers(0, 256, (L + 1, B, 64, 64, 3), dtype=np.uint8),
        rng.uniform(-1, 1, (L, B, A)).astype(np.float32),
        rng.standard_normal((L, B)).astype(np.float32),
        np.zeros((L, B), bool),
    )
    return batch_to_device(host, torch.device("cpu"))


def test_forward_shapes_and_loss_parts(one_thread) -> None:
    torch.manual_seed(0)
    m = WorldModel(2, TINY)
    b = random_batch()
    embeds = m.encode(b.obs)
    assert embeds.shape == (7, 3, 32 * 4)
    posts, priors = m.observe(embeds, b.action)
    assert posts.h.shape == (7, 3, 16) and posts.s.shape == (7, 3, 4)
    assert priors.std.min() >= TINY.min_std
    assert m.decode(posts.features()).shape == (7, 3, 3, 64, 64)
    assert m.reward(posts.features()[1:]).shape == (6, 3)
    imagined = m.imagine(m.initial_state(3), b.action)
    assert imagined.s.shape == (6, 3, 4)
    loss, parts = m.loss(b, free_nats=3.0)
    assert loss.ndim == 0 and set(parts) == {"obs", "reward", "kl"}
    # free nats: the KL term is at least 3 whatever the raw KL is
    assert loss.item() >= parts["obs"] + parts["reward"] + 3.0 - 1e-3
    pred = m.open_loop(b.obs, b.action, context=3)
    assert pred.shape == b.obs.shape and pred.abs().max() <= 0.5


def test_paper_preset_has_the_paper_sizes() -> None:
    p = PRESETS["paper"]
    assert (p.deter, p.stoch, p.cnn_depth) == (200, 30, 32)
    m = WorldModel(1, p)
    assert [c.out_channels for c in m.encoder.net if isinstance(c, torch.nn.Conv2d)] == [
        32,
        64,
        128,
        256,
    ]
    assert m.encoder.out_dim == 1024


@pytest.fixture
def one_thread():
    """Tiny ops run faster on one thread (and do not fight other work for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_steps_reduce_the_loss_on_a_fixed_batch(one_thread) -> None:
    torch.manual_seed(0)
    m = WorldModel(2, TINY)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3, eps=1e-4)
    b = random_batch(L=4, B=2)
    img = torch.zeros(3, 64, 64)
    img[0, :, :32], img[1, 16:48] = 0.4, -0.4  # a fixed picture the decoder can learn
    b = b._replace(obs=img.expand_as(b.obs).clone())
    first = None
    for _ in range(15):
        loss, _ = m.loss(b)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m.loss(b)[0].item() < 0.5 * first


def _line_planner(cfg: PlannerConfig, seed: int = 0) -> CEMPlanner:
    """A known model: state x (N, 1), x' = x + a, reward -|x' - 3|; the best first
    action is +1 (move right at full speed)."""
    g = torch.Generator().manual_seed(seed)
    return CEMPlanner(lambda x, a: x + a, lambda x: -(x[:, 0] - 3.0).abs(), 1, cfg, g)


def test_cem_actions_are_in_bounds_and_beat_random_on_a_known_model() -> None:
    cfg = PlannerConfig(horizon=5, candidates=200, top_k=20, iterations=4)
    planner = _line_planner(cfg)
    x, planned = torch.zeros(1, 1), 0.0
    rng = np.random.default_rng(0)
    xr, random_ret = 0.0, 0.0
    for _ in range(8):
        a = planner.plan(x)
        assert a.shape == (1,) and -1.0 <= a.item() <= 1.0
        x = x + a
        planned += -abs(x.item() - 3.0)
        xr += rng.uniform(-1, 1)
        random_ret += -abs(xr - 3.0)
    assert planner.plan(torch.zeros(1, 1)).item() > 0.8
    assert planned > random_ret + 5.0
    assert abs(x.item() - 3.0) < 0.3


def test_cem_plans_are_reproducible_with_a_seeded_generator() -> None:
    cfg = PlannerConfig(horizon=3, candidates=50, top_k=5, iterations=2)
    a = _line_planner(cfg, seed=4).plan(torch.zeros(1, 1))
    b = _line_planner(cfg, seed=4).plan(torch.zeros(1, 1))
    assert torch.equal(a, b)


def test_planner_config_is_checked() -> None:
    with pytest.raises(ValueError, match="top_k"):
        PlannerConfig(candidates=10, top_k=20)
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        PlannerConfig(horizon=0)


def test_planning_through_the_world_model() -> None:
    from rlkit.planet.episodes import make_planner

    torch.manual_seed(0)
    m = WorldModel(2, TINY)
    planner = make_planner(m, PlannerConfig(horizon=4, candidates=16, top_k=4, iterations=2), 0)
    a = planner.plan(m.initial_state(1))
    assert a.shape == (2,) and a.abs().max() <= 1.0


def test_kl_balance_weighs_the_same_kl_but_moves_the_prior_more(one_thread) -> None:
    b = random_batch(L=4, B=2)
    torch.manual_seed(0)
    m = WorldModel(2, TINY)
    torch.manual_seed(1)  # the same sampled states: both losses draw from the same stream
    plain, _ = m.loss(b, free_nats=0.0)
    torch.manual_seed(1)
    balanced, _ = m.loss(b, free_nats=0.0, kl_balance=0.8)
    # alpha * KL + (1 - alpha) * KL: the value is PlaNet's, only the gradients differ
    assert balanced.item() == pytest.approx(plain.item(), rel=1e-5)

    def kl_grads(alpha: float) -> tuple[float, float]:
        """|d KL / d prior head| and |d KL / d posterior head| (free nats 0, KL term only)."""
        m.zero_grad()
        torch.manual_seed(1)
        total, _ = m.loss(b, free_nats=0.0, kl_balance=alpha)
        torch.manual_seed(1)
        recon, _ = m.loss(b, free_nats=1e9, kl_balance=alpha)  # KL term constant: no KL grad
        (total - recon).backward()
        return m.prior_out.weight.grad.norm().item(), m.post_out.weight.grad.norm().item()

    prior_plain, post_plain = kl_grads(0.0)
    prior_bal, post_bal = kl_grads(0.8)
    assert prior_bal / post_bal > 2 * prior_plain / post_plain


def test_bf16_convs_compute_close_to_float32_and_share_the_weights(one_thread) -> None:
    torch.manual_seed(0)
    fp32 = WorldModel(2, TINY)
    bf16 = WorldModel(2, TINY, bf16_convs=True)
    bf16.load_state_dict(fp32.state_dict())  # the same checkpoint loads into either
    b = random_batch()
    e32, e16 = fp32.encode(b.obs), bf16.encode(b.obs)
    assert e16.dtype == torch.float32  # the RSSM always gets float32
    assert torch.allclose(e16, e32, atol=0.05, rtol=0.05) and not torch.equal(e16, e32)
    torch.manual_seed(2)
    l32, _ = fp32.loss(b)
    torch.manual_seed(2)
    l16, _ = bf16.loss(b)
    assert l16.item() == pytest.approx(l32.item(), rel=0.02)
