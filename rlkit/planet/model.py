"""PlaNet's world model: conv encoder/decoder for 64x64 frames, RSSM, reward head, loss.

RSSM (recurrent state-space model, Hafner et al. 2019). The state at step t is a
deterministic GRU state h_t and a Gaussian stochastic state s_t::

    t:          0                 1                      L
              a_-1 = 0           a_0                   a_L-1
                 |                 |                      |
    h_-1=0 --> [GRU] --> h_0 --> [GRU] --> h_1 ... --> [GRU] --> h_L
    s_-1=0 ----^   |      |  ^----'  |      |                    |
                   v      v  |       v      v                    v
               prior(h_0) post(h_0, e_0)  prior(h_1) post(h_1, e_1)   ...
                          = s_0                     = s_1
    e_t = encoder(o_t);   decoder(h_t, s_t) -> o_t;   reward(h_t+1, s_t+1) -> r_t

Training (``observe``) uses the posterior (it sees o_t); planning and open-loop prediction
(``imagine``) use the prior. Loss per batch, averaged over time and batch::

    sum over pixels of (decoder(h_t, s_t) - o_t)^2          observations in [-0.5, 0.5]
  + (reward(h_t+1, s_t+1) - r_t)^2
  + max(free_nats, KL(post_t || prior_t) summed over the stochastic units)

Sizes come from a preset: ``paper`` (deterministic 200, stochastic 30, hidden 200, conv
32-64-128-256, embedding 1024) or ``cpu`` (100, 16, 100, conv 16-32-64-128), the default
without CUDA (measured in ``bench/bench_world_model.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from rlkit.planet.dataset import Batch

__all__ = ["PRESETS", "ModelSizes", "State", "WorldModel", "cpu_has_bf16"]


@dataclass(frozen=True)
class ModelSizes:
    """Widths of the world model. ``cnn_depth`` d gives conv channels d-2d-4d-8d."""

    cnn_depth: int = 16
    deter: int = 100
    stoch: int = 16
    hidden: int = 100
    min_std: float = 0.1

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


PRESETS: dict[str, ModelSizes] = {
    "cpu": ModelSizes(cnn_depth=16, deter=100, stoch=16, hidden=100),
    "paper": ModelSizes(cnn_depth=32, deter=200, stoch=30, hidden=200),
}


class State(NamedTuple):
    """RSSM state, batch-first tensors: h (B, deter), s (B, stoch), mean/std (B, stoch)."""

    h: torch.Tensor
    s: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def features(self) -> torch.Tensor:
        return torch.cat([self.h, self.s], dim=-1)


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class _Convs(nn.Module):
    """A conv stack that computes in ``self.dtype`` (bfloat16 autocast, or None: float32) and
    returns float32. The RSSM, the reward head and the loss stay in float32 either way."""

    dtype: torch.dtype | None = None

    def run(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.dtype is None:
            return net(x)
        with torch.autocast(x.device.type, dtype=self.dtype):
            return net(x).float()


class Encoder(_Convs):
    """(N, 3, 64, 64) in [-0.5, 0.5] -> (N, 32 d): four 4x4 stride-2 convs (64-31-14-6-2)."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        d = depth
        self.net = nn.Sequential(
            nn.Conv2d(3, d, 4, 2),
            nn.ReLU(),
            nn.Conv2d(d, 2 * d, 4, 2),
            nn.ReLU(),
            nn.Conv2d(2 * d, 4 * d, 4, 2),
            nn.ReLU(),
            nn.Conv2d(4 * d, 8 * d, 4, 2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.out_dim = 32 * d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(self.net, x)


class Decoder(_Convs):
    """(N, features) -> (N, 3, 64, 64): a dense layer to 32 d x 1 x 1, then transposed
    convs with kernels 5-5-6-6, stride 2 (1-5-13-30-64)."""

    def __init__(self, in_dim: int, depth: int) -> None:
        super().__init__()
        d = depth
        self.fc = nn.Linear(in_dim, 32 * d)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(32 * d, 4 * d, 5, 2),
            nn.ReLU(),
            nn.ConvTranspose2d(4 * d, 2 * d, 5, 2),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * d, d, 6, 2),
            nn.ReLU(),
            nn.ConvTranspose2d(d, 3, 6, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(self.net, self.fc(x)[:, :, None, None])


class WorldModel(nn.Module):
    """Encoder, RSSM, decoder and reward head (see the module docstring)."""

    def __init__(self, action_dim: int, sizes: ModelSizes, bf16_convs: bool = False) -> None:
        super().__init__()
        self.sizes, self.action_dim = sizes, action_dim
        z, hsz, hid = sizes.stoch, sizes.deter, sizes.hidden
        self.encoder = Encoder(sizes.cnn_depth)
        self.decoder = Decoder(hsz + z, sizes.cnn_depth)
        for convs in (self.encoder, self.decoder):
            # NHWC: frames arrive (..., H, W, 3), and oneDNN's convolutions are faster so
            convs.to(memory_format=torch.channels_last)
            convs.dtype = torch.bfloat16 if bf16_convs else None
        self.fc_input = nn.Linear(z + action_dim, hid)
        self.gru = nn.GRUCell(hid, hsz)
        self.fc_prior = nn.Linear(hsz, hid)
        self.prior_out = nn.Linear(hid, 2 * z)
        self.fc_post = nn.Linear(hsz + self.encoder.out_dim, hid)
        self.post_out = nn.Linear(hid, 2 * z)
        self.reward_head = nn.Sequential(
            nn.Linear(hsz + z, hid), nn.ELU(), nn.Linear(hid, hid), nn.ELU(), nn.Linear(hid, 1)
        )

    def spec(self) -> dict[str, float]:
        """What a checkpoint must match to be loaded into this model."""
        return {**self.sizes.to_dict(), "action_dim": self.action_dim}

    # ------------------------------------------------------------------ RSSM steps
    def initial_state(self, batch: int, device: torch.device | None = None) -> State:
        dev = device or next(self.parameters()).device
        zeros = torch.zeros(batch, self.sizes.stoch, device=dev)
        return State(torch.zeros(batch, self.sizes.deter, device=dev), zeros, zeros, zeros)

    def _gaussian(self, out: torch.Tensor, h: torch.Tensor, sample: bool) -> State:
        mean, raw = out.chunk(2, dim=-1)
        std = F.softplus(raw) + self.sizes.min_std
        s = mean + std * torch.randn_like(std) if sample else mean
        return State(h, s, mean, std)

    def img_step(self, state: State, action: torch.Tensor, sample: bool = True) -> State:
        """Prior step: (h_t-1, s_t-1, a_t-1) -> h_t and p(s_t | h_t)."""
        x = F.elu(self.fc_input(torch.cat([state.s, action], dim=-1)))
        h = self.gru(x, state.h)
        return self._gaussian(self.prior_out(F.elu(self.fc_prior(h))), h, sample)

    def obs_step(
        self, state: State, action: torch.Tensor, embed: torch.Tensor, sample: bool = True
    ) -> tuple[State, State]:
        """(posterior, prior) of step t given o_t's embedding ``embed``."""
        prior = self.img_step(state, action, sample)
        x = F.elu(self.fc_post(torch.cat([prior.h, embed], dim=-1)))
        return self._gaussian(self.post_out(x), prior.h, sample), prior

    def reward(self, features: torch.Tensor) -> torch.Tensor:
        return self.reward_head(features).squeeze(-1)

    # ------------------------------------------------------------------ sequences
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """(T, B, 3, 64, 64) -> (T, B, E)."""
        t, b = obs.shape[:2]
        return self.encoder(obs.reshape(t * b, *obs.shape[2:])).reshape(t, b, -1)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """(T, B, F) -> (T, B, 3, 64, 64) in [-0.5, 0.5] (unclipped)."""
        t, b = features.shape[:2]
        return self.decoder(features.reshape(t * b, -1)).reshape(t, b, 3, 64, 64)

    def observe(
        self, embeds: torch.Tensor, actions: torch.Tensor, state: State | None = None
    ) -> tuple[State, State]:
        """Filter a sequence: embeds (L+1, B, E), actions (L, B, A) -> stacked posteriors
        and priors, each field (L+1, B, ...). ``a_-1`` is zero (see the diagram)."""
        n, b = embeds.shape[:2]
        state = state or self.initial_state(b, embeds.device)
        zero = torch.zeros(b, self.action_dim, device=embeds.device)
        posts, priors = [], []
        for t in range(n):
            post, prior = self.obs_step(state, zero if t == 0 else actions[t - 1], embeds[t])
            posts.append(post)
            priors.append(prior)
            state = post
        stack = lambda xs: State(*(torch.stack(f) for f in zip(*xs, strict=True)))  # noqa: E731
        return stack(posts), stack(priors)

    def imagine(self, state: State, actions: torch.Tensor, sample: bool = True) -> State:
        """Open loop from ``state``: actions (H, B, A) -> prior states, fields (H, B, ...)."""
        out = []
        for a in actions:
            state = self.img_step(state, a, sample)
            out.append(state)
        return State(*(torch.stack(f) for f in zip(*out, strict=True)))

    # ------------------------------------------------------------------ loss
    def loss(
        self, batch: Batch, free_nats: float = 3.0, kl_balance: float = 0.0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """PlaNet's loss on a device batch (see :func:`rlkit.planet.dataset.batch_to_device`).

        Args:
            batch: Time-major frames, actions and rewards.
            free_nats: KL below this many nats per step costs nothing.
            kl_balance: 0: PlaNet's KL(post || prior), which trains both sides alike.
                alpha in (0, 1): DreamerV2's KL balancing, alpha * KL(sg(post) || prior) +
                (1 - alpha) * KL(post || sg(prior)), each with the free nats: the prior
                (which planning uses) moves towards the posterior faster than the other way.

        Returns:
            The scalar loss and its parts (``obs``, ``reward``, ``kl`` before free nats).
        """
        obs, action, reward = batch.obs, batch.action, batch.reward
        posts, priors = self.observe(self.encode(obs), action)
        feats = posts.features()
        obs_loss = (self.decode(feats) - obs).square().sum(dim=(2, 3, 4)).mean()
        reward_loss = (self.reward(feats[1:]) - reward).square().mean()

        def kl_of(post: State, prior: State) -> torch.Tensor:
            return torch.distributions.kl_divergence(
                torch.distributions.Normal(post.mean, post.std),
                torch.distributions.Normal(prior.mean, prior.std),
            ).sum(-1)

        kl = kl_of(posts, priors)
        if not kl_balance:
            kl_loss = kl.clamp(min=free_nats).mean()
        else:
            sg = lambda st: State(*(f.detach() for f in st))  # noqa: E731
            to_prior = kl_of(sg(posts), priors).clamp(min=free_nats).mean()
            to_post = kl_of(posts, sg(priors)).clamp(min=free_nats).mean()
            kl_loss = kl_balance * to_prior + (1 - kl_balance) * to_post
        total = obs_loss + reward_loss + kl_loss
        parts = {
            "obs": obs_loss.item(),
            "reward": reward_loss.item(),
            "kl": kl.mean().item(),
        }
        return total, parts

    @torch.no_grad()
    def open_loop(self, obs: torch.Tensor, actions: torch.Tensor, context: int) -> torch.Tensor:
        """Reconstruct the first ``context`` frames, then predict the rest from actions only.

        Args:
            obs: (L+1, B, 3, 64, 64) model-range frames.
            actions: (L, B, A).
            context: Frames seen by the posterior (>= 1).

        Returns:
            (L+1, B, 3, 64, 64) predicted frames in [-0.5, 0.5].
        """
        posts, _ = self.observe(self.encode(obs[:context]), actions[: context - 1])
        last = State(*(f[-1] for f in posts))
        recon = self.decode(posts.features())
        if context >= len(obs):
            return recon.clamp(-0.5, 0.5)
        imagined = self.imagine(last, actions[context - 1 :], sample=False)
        pred = self.decode(imagined.features())
        return torch.cat([recon, pred]).clamp(-0.5, 0.5)
