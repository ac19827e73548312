"""Cross-entropy-method (CEM) planning in a learned model's latent space (PlaNet).

At every environment step, from the current belief state::

    mean = 0, std = 1                                    (H, A) action-sequence distribution
    repeat ``iterations`` times:
        draw ``candidates`` sequences  a ~ clip(N(mean, std), -1, 1)        (H, N, A)
        roll every sequence out through the model's prior in one batch (N states)
        return_n = sum over the horizon of the predicted rewards
        mean, std = mean and std of the ``top_k`` best sequences
    act: mean[0] (+ exploration noise while collecting, none while evaluating)

The planner only needs two callables, so it can plan through any model with a batched
transition -- tests plan through a tiny known model::

    transition(state, action (N, A)) -> next state
    reward(next state) -> (N,) predicted reward of that step
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CEMPlanner", "PlannerConfig"]


@dataclass(frozen=True)
class PlannerConfig:
    """CEM sizes; the paper uses horizon 12, 1000 candidates, top 100, 10 iterations."""

    horizon: int = 12
    candidates: int = 1000
    top_k: int = 100
    iterations: int = 10

    def __post_init__(self) -> None:
        for name in ("horizon", "candidates", "top_k", "iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"planner {name} must be >= 1, got {getattr(self, name)}")
        if self.top_k > self.candidates:
            raise ValueError(
                f"planner top_k ({self.top_k}) must be <= candidates ({self.candidates})"
            )


def _expand(state: Any, n: int) -> Any:
    """Repeat a batch-of-one state (tensor or tuple of tensors, batch first) ``n`` times."""
    if isinstance(state, torch.Tensor):
        return state.expand(n, *state.shape[1:])
    return type(state)(*(_expand(s, n) for s in state))


class CEMPlanner:
    """Plan an action for one belief state by CEM (see the module docstring).

    Args:
        transition: Batched model step ``(state, actions) -> state``.
        reward: Predicted reward of a state, ``(N,)``.
        action_dim: Size of an action; actions live in [-1, 1].
        config: CEM sizes.
        generator: Torch generator for the candidate draws (reproducible plans).
    """

    def __init__(
        self,
        transition: Callable[[Any, torch.Tensor], Any],
        reward: Callable[[Any], torch.Tensor],
        action_dim: int,
        config: PlannerConfig = PlannerConfig(),
        generator: torch.Generator | None = None,
    ) -> None:
        self.transition, self.reward = transition, reward
        self.action_dim, self.config = action_dim, config
        self.generator = generator

    @torch.no_grad()
    def plan(self, state: Any, device: torch.device | str = "cpu") -> torch.Tensor:
        """The first action of the best action sequence found from ``state`` (batch of one).

        Returns:
            (action_dim,) tensor in [-1, 1].
        """
        c = self.config
        n, h, a = c.candidates, c.horizon, self.action_dim
        start = _expand(state, n)
        mean = torch.zeros(h, 1, a, device=device)
        std = torch.ones(h, 1, a, device=device)
        for _ in range(c.iterations):
            noise = torch.randn(h, n, a, device=device, generator=self.generator)
            actions = (mean + std * noise).clamp_(-1.0, 1.0)
            returns = torch.zeros(n, device=device)
            s = start
            for t in range(h):
                s = self.transition(s, actions[t])
                returns += self.reward(s)
            best = returns.topk(c.top_k).indices
            elite = actions[:, best]
            mean = elite.mean(dim=1, keepdim=True)
            std = elite.std(dim=1, unbiased=False, keepdim=True).clamp_(min=1e-3)
        return mean[0, 0]
