"""The behaviour-cloning policy and its export into Stable-Baselines3 policies.

The BC network is built with SB3's own ``create_mlp`` (Tanh activations, Tanh output), so
its layers *are* the layers of SB3's actors::

    BC net            Linear-Tanh-Linear-Tanh-Linear-Tanh          (raw obs, normalised inside)
    TD3 actor.mu      the same Sequential                           (identical state-dict keys)
    SAC actor         latent_pi = the first four modules, mu = the last Linear; SAC applies tanh
    PPO policy_net    the same Sequential (net_arch pi=[*hidden, act_dim]); action_net = identity

Observation normalisation (``(obs - mean) / std``) is folded into the first Linear layer on
export, so the SB3 policies take raw observations; the Tanh output is SB3's normalised
[-1, 1] action space. Every export's deterministic action equals the BC policy's (tested).

Each ``policy_{ppo,sac,td3}.zip`` is a complete SB3 model file, written by SB3's own
``BaseAlgorithm.save``, so it opens wherever SB3 models do::

    from stable_baselines3 import PPO
    model = PPO.load("runs/bc/policy_ppo.zip")          # observation/action spaces inside
    action, _ = model.predict(obs, deterministic=True)  # = the BC policy's action

The models carry the BC weights (critics untrained) with SB3's default hyperparameters,
except that SAC/TD3 record ``buffer_size=1`` so that writing (and loading) an export never
allocates a replay buffer; to train on from one directly, pass your own:
``SAC.load(path, env=env, buffer_size=300_000)``. ``train_rl.py --init-from`` instead builds a
fresh model with its own settings and copies the policy weights in (:func:`load_bc_into`).
``bc_export.json`` lists the files, the ``policy_kwargs`` to build a matching model with and
the action bounds (SB3 acts in [-1, 1]; ``act_low``/``act_high`` map it onto the real ones).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import create_mlp
from torch import nn

from rlkit.utils import atomic_path, torch_save_atomic

__all__ = [
    "ALGOS",
    "BCPolicy",
    "PixelBCPolicy",
    "export_sb3",
    "load_bc_into",
    "load_policy",
    "policy_kwargs_for",
    "read_export_meta",
]

ALGOS = ("ppo", "sac", "td3")
EXPORT_META = "bc_export.json"
#: v2: every ``policy_{algo}.zip`` is a full SB3 model (``PPO.load`` opens it).
#: v1 (read for older runs): SB3 policy files, opened only by ``ActorCriticPolicy.load`` etc.
EXPORT_FORMAT = "rlkit-bc-export-v2"
_FORMATS = ("rlkit-bc-export-v1", EXPORT_FORMAT)

#: Set on the exported SAC/TD3 models so that building them allocates no replay buffer.
_EXPORT_BUFFER_SIZE = 1


def _vector(value: np.ndarray | None, fill: float, size: int) -> torch.Tensor:
    """A normalisation vector of ``size`` float32 values (``fill`` when ``value`` is None)."""
    arr = np.full(size, fill) if value is None else np.asarray(value, np.float64).ravel()
    if arr.shape != (size,):
        raise ValueError(f"normalisation vector must have shape ({size},), got {arr.shape}")
    return torch.as_tensor(arr, dtype=torch.float32)


class _ActionBounds:
    """The map between real actions and the policy's [-1, 1] (buffers ``act_low``/``act_high``)."""

    act_low: torch.Tensor
    act_high: torch.Tensor

    def normalise_action(self, action: np.ndarray) -> np.ndarray:
        """Real actions -> [-1, 1] (the training target)."""
        low, high = self.act_low.cpu().numpy(), self.act_high.cpu().numpy()
        return np.clip(2.0 * (action - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)

    def real_action(self, a: torch.Tensor) -> np.ndarray:
        """The policy's [-1, 1] output -> real actions (numpy)."""
        low, high = self.act_low.cpu().numpy(), self.act_high.cpu().numpy()
        return low + (a.cpu().numpy() + 1.0) * 0.5 * (high - low)


class BCPolicy(_ActionBounds, nn.Module):
    """MLP policy: raw observation -> action in the normalised [-1, 1] space.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden: hidden layer widths.
        obs_mean, obs_std: observation normalisation (default 0 / 1).
        act_low, act_high: bounds of the real action space; ``act`` maps [-1, 1] onto them.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: list[int] | tuple[int, ...] = (256, 256),
        obs_mean: np.ndarray | None = None,
        obs_std: np.ndarray | None = None,
        act_low: np.ndarray | None = None,
        act_high: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden = (
            int(obs_dim),
            int(act_dim),
            [int(h) for h in hidden],
        )
        self.net = nn.Sequential(
            *create_mlp(obs_dim, act_dim, self.hidden, nn.Tanh, squash_output=True)
        )

        self.register_buffer("obs_mean", _vector(obs_mean, 0.0, obs_dim))
        self.register_buffer("obs_std", _vector(obs_std, 1.0, obs_dim))
        self.register_buffer("act_low", _vector(act_low, -1.0, act_dim))
        self.register_buffer("act_high", _vector(act_high, 1.0, act_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalised action in [-1, 1] for raw observations ``(B, obs_dim)``."""
        return self.net((obs - self.obs_mean) / self.obs_std)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Real actions ``(B, act_dim)`` for a batch of raw observations (numpy in, numpy out)."""
        device = self.obs_mean.device
        x = torch.tensor(np.asarray(obs, dtype=np.float32), device=device)  # copy: may be read-only
        return self.real_action(self(x))

    def folded_net(self) -> nn.Sequential:
        """A copy of the MLP with the observation normalisation folded into the first layer.

        ``W ((x - m) / s) + b = (W / s) x + (b - W (m / s))``, so the copy takes raw observations.
        """
        net = copy.deepcopy(self.net).cpu().float()
        first = net[0]
        assert isinstance(first, nn.Linear)
        with torch.no_grad():
            inv = 1.0 / self.obs_std.cpu().double()
            w = first.weight.double()
            first.bias.copy_(
                (first.bias.double() - w @ (self.obs_mean.cpu().double() * inv)).float()
            )
            first.weight.copy_((w * inv[None, :]).float())
        return net

    def spec(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden": self.hidden}

    def save(self, path: str | Path, **extra: Any) -> None:
        """Write ``{spec, state_dict, **extra}`` atomically."""
        torch_save_atomic({"spec": self.spec(), "state_dict": self.state_dict(), **extra}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> BCPolicy:
        policy = load_policy(path, map_location)
        if not isinstance(policy, BCPolicy):
            raise ValueError(
                f"{path} is a pixel policy (train_bc.py --obs-key naming a video); it drives "
                "from camera frames, not from the state vector"
            )
        return policy


class PixelBCPolicy(_ActionBounds, nn.Module):
    """CNN policy: camera frames -> action in the normalised [-1, 1] space.

    Input: uint8 ``(B, S, H, W, 3)``, ``S`` frames per sample: the current frame of camera
    ``view``, then (``gap`` > 0) the one ``gap`` steps earlier -- one frame shows where the
    car is, two show where it is going. Pixels are scaled to [0, 1] and normalised per
    channel inside. ``gap`` and ``view`` travel with the policy: they say what to feed it.

    Architecture (DQN's "Nature" encoder, narrower first layer for CPU): conv 8x8/4 (16) ->
    conv 4x4/2 (32) -> conv 3x3/1 (32), ReLU, flatten -> MLP ``hidden`` (ReLU) -> Tanh.

    Args:
        image_shape: ``(H, W, 3)`` of a frame.
        act_dim: action size.
        hidden: hidden widths after the encoder.
        pixel_mean, pixel_std: per-channel normalisation in [0, 1] units (default 0.5 / 0.25).
        act_low, act_high: bounds of the real action space; ``act`` maps [-1, 1] onto them.
        gap: steps between the two frames of a sample (0: one frame).
        view: the camera (:data:`rlkit.envs.render.VIEWS`) the frames come from.
    """

    def __init__(
        self,
        image_shape: list[int] | tuple[int, ...],
        act_dim: int,
        hidden: list[int] | tuple[int, ...] = (256,),
        pixel_mean: np.ndarray | None = None,
        pixel_std: np.ndarray | None = None,
        act_low: np.ndarray | None = None,
        act_high: np.ndarray | None = None,
        *,
        gap: int = 0,
        view: str = "top",
    ) -> None:
        super().__init__()
        self.image_shape = [int(x) for x in image_shape]
        self.act_dim, self.hidden = int(act_dim), [int(h) for h in hidden]
        self.gap, self.view = int(gap), str(view)
        self.frames = 2 if self.gap else 1
        h, w, c = self.image_shape
        if min(h, w) < 36 or c != 3:
            raise ValueError(f"frames must be at least 36 x 36 RGB, got {self.image_shape}")
        self.encoder = nn.Sequential(
            nn.Conv2d(3 * self.frames, 16, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.encoder(torch.zeros(1, 3 * self.frames, h, w)).shape[1]
        self.head = nn.Sequential(
            *create_mlp(n_flat, act_dim, self.hidden, nn.ReLU, squash_output=True)
        )

        self.register_buffer("pixel_mean", _vector(pixel_mean, 0.5, 3).view(1, 1, 3, 1, 1))
        self.register_buffer("pixel_std", _vector(pixel_std, 0.25, 3).view(1, 1, 3, 1, 1))
        self.register_buffer("act_low", _vector(act_low, -1.0, act_dim))
        self.register_buffer("act_high", _vector(act_high, 1.0, act_dim))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised actions for uint8 frames ``(B, S, H, W, 3)``."""
        x = frames.permute(0, 1, 4, 2, 3).float().div_(255.0)  # (B, S, 3, H, W)
        x = (x - self.pixel_mean) / self.pixel_std
        return self.head(self.encoder(x.flatten(1, 2)))

    @torch.no_grad()
    def act(self, frames: np.ndarray) -> np.ndarray:
        """Real actions ``(B, act_dim)`` for uint8 frames ``(B, S, H, W, 3)``."""
        x = torch.as_tensor(np.ascontiguousarray(frames), device=self.act_low.device)
        return self.real_action(self(x))

    def spec(self) -> dict[str, Any]:
        return {
            "image_shape": self.image_shape,
            "act_dim": self.act_dim,
            "hidden": self.hidden,
            "gap": self.gap,
            "view": self.view,
        }

    def save(self, path: str | Path, **extra: Any) -> None:
        """Write ``{kind, spec, state_dict, **extra}`` atomically."""
        blob = {"kind": "pixels", "spec": self.spec(), "state_dict": self.state_dict(), **extra}
        torch_save_atomic(blob, path)


def load_policy(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> BCPolicy | PixelBCPolicy:
    """A ``bc_policy.pt`` of either kind (:class:`BCPolicy` or :class:`PixelBCPolicy`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no BC policy file; train one with train_bc.py")
    blob = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(blob, dict) or "spec" not in blob or "state_dict" not in blob:
        raise ValueError(f"{path}: not an rlkit BC policy file (no 'spec'/'state_dict')")
    cls = PixelBCPolicy if blob.get("kind") == "pixels" else BCPolicy
    policy = cls(**blob["spec"])
    policy.load_state_dict(blob["state_dict"])
    return policy


# ------------------------------------------------------------------ SB3 export
def policy_kwargs_for(
    algo: str, hidden: list[int], act_dim: int, init_std: float
) -> dict[str, Any]:
    """``policy_kwargs`` of the SB3 model a BC export loads into (JSON-safe; see build)."""
    if algo == "ppo":
        return {
            "net_arch": {"pi": [*hidden, act_dim], "vf": list(hidden)},
            "activation_fn": "tanh",
            "log_std_init": math.log(init_std),
        }
    if algo in ("sac", "td3"):
        return {"net_arch": {"pi": list(hidden), "qf": list(hidden)}, "activation_fn": "tanh"}
    raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")


def build_policy_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """JSON ``policy_kwargs`` -> the real ones (activation names -> classes)."""
    out = dict(kwargs)
    acts = {"tanh": nn.Tanh, "relu": nn.ReLU}
    if isinstance(out.get("activation_fn"), str):
        out["activation_fn"] = acts[out["activation_fn"]]
    return out


def _algo_class(algo: str) -> type:
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    return {
        "ppo": stable_baselines3.PPO,
        "sac": stable_baselines3.SAC,
        "td3": stable_baselines3.TD3,
    }[algo]


class _SpacesEnv(gym.Env):
    """Carries the observation and action spaces an SB3 model is built for; never stepped."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        self.observation_space = observation_space
        self.action_space = action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        raise RuntimeError("the export's placeholder env cannot be reset")

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        raise RuntimeError("the export's placeholder env cannot be stepped")


def _export_model(
    algo: str,
    folded: nn.Sequential,
    observation_space: spaces.Box,
    action_space: spaces.Box,
    kwargs: dict[str, Any],
    init_std: float,
) -> Any:
    """An SB3 model (PPO/SAC/TD3) whose policy is the folded BC network."""
    extra: dict[str, Any] = {}
    if algo in ("sac", "td3"):
        extra["buffer_size"] = _EXPORT_BUFFER_SIZE
    model = _algo_class(algo)(
        "MlpPolicy",
        _SpacesEnv(observation_space, action_space),
        policy_kwargs=build_policy_kwargs(kwargs),
        device="cpu",
        verbose=0,
        **extra,
    )
    sb3, n = model.policy, len(folded)
    with torch.no_grad():
        if algo == "ppo":
            sb3.mlp_extractor.policy_net.load_state_dict(folded.state_dict())
            sb3.action_net.weight.copy_(torch.eye(action_space.shape[0]))
            sb3.action_net.bias.zero_()
        elif algo == "sac":
            sb3.actor.latent_pi.load_state_dict(folded[: n - 2].state_dict())
            sb3.actor.mu.load_state_dict(folded[n - 2].state_dict())
            sb3.actor.log_std.weight.zero_()
            sb3.actor.log_std.bias.fill_(math.log(init_std))
        else:
            sb3.actor.mu.load_state_dict(folded.state_dict())
            sb3.actor_target.load_state_dict(sb3.actor.state_dict())
    return model


def _policy_class(algo: str) -> type:
    if algo == "ppo":
        from stable_baselines3.common.policies import ActorCriticPolicy

        return ActorCriticPolicy
    if algo == "sac":
        from stable_baselines3.sac.policies import SACPolicy

        return SACPolicy
    if algo == "td3":
        from stable_baselines3.td3.policies import TD3Policy

        return TD3Policy
    raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")


def export_sb3(
    policy: BCPolicy,
    out_dir: str | Path,
    observation_space: spaces.Box,
    init_std: float = 0.1,
    algos: tuple[str, ...] = ALGOS,
    env_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save the BC policy as SB3 models ``policy_{algo}.zip`` plus ``bc_export.json``.

    Each zip is a full SB3 model (``PPO.load`` / ``SAC.load`` / ``TD3.load`` open it) whose
    policy acts like the BC policy; every file is written atomically.

    Args:
        policy: the trained BC policy.
        out_dir: folder to write into.
        observation_space: the env's observation space (raw observations).
        init_std: initial action standard deviation of the stochastic policies (PPO, SAC).
        algos: which exports to write.
        env_config: the racing env configuration the data came from (``RacingConfig.to_dict``),
            so RL builds the same observation; None for other datasets.

    Returns:
        The export metadata (also written as ``bc_export.json``).
    """
    if not 0 < init_std <= 1:
        raise ValueError(f"init_std must be in (0, 1], got {init_std}")
    for algo in algos:
        _algo_class(algo)  # an unknown name fails before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    action_space = spaces.Box(-1.0, 1.0, (policy.act_dim,), dtype=np.float32)
    folded = policy.folded_net()
    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "obs_dim": policy.obs_dim,
        "act_dim": policy.act_dim,
        "hidden": policy.hidden,
        "init_std": init_std,
        "act_low": policy.act_low.tolist(),
        "act_high": policy.act_high.tolist(),
        "env_config": env_config,
        "stable_baselines3": stable_baselines3.__version__,
        "policy_kwargs": {},
        "files": {},
        "load_with": {},
    }
    for algo in algos:
        kwargs = policy_kwargs_for(algo, policy.hidden, policy.act_dim, init_std)
        model = _export_model(algo, folded, observation_space, action_space, kwargs, init_std)
        name = f"policy_{algo}.zip"
        with atomic_path(out / name) as tmp:
            model.save(tmp)
        meta["policy_kwargs"][algo] = kwargs
        meta["files"][algo] = name
        meta["load_with"][algo] = f"stable_baselines3.{algo.upper()}.load"
    with atomic_path(out / EXPORT_META) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def read_export_meta(export_dir: str | Path) -> dict[str, Any]:
    """``bc_export.json`` of a BC output folder, with a clear error when it is not one."""
    path = Path(export_dir) / EXPORT_META
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {export_dir} is not a train_bc.py output folder"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") not in _FORMATS:
        raise ValueError(f"{path}: unknown export format {meta.get('format')!r}")
    return meta


def _exported_state_dict(file: Path, meta: dict[str, Any], algo: str, device: Any) -> Any:
    """The policy ``state_dict`` stored in an export file of either format."""
    if meta["format"] == "rlkit-bc-export-v1":  # an SB3 policy file
        return _policy_class(algo).load(str(file), device=device).state_dict()
    from stable_baselines3.common.save_util import load_from_zip_file

    _, params, _ = load_from_zip_file(file, device=device)
    if not params or "policy" not in params:
        raise ValueError(f"{file}: not an SB3 model file (no policy parameters)")
    return params["policy"]


def load_bc_into(model: Any, export_dir: str | Path) -> None:
    """Load a BC export into a fresh SB3 model (PPO, SAC or TD3) built with the export's
    ``policy_kwargs`` (``read_export_meta(dir)["policy_kwargs"][algo]``).

    Only the policy's weights are copied; the model keeps its own hyperparameters.

    Raises:
        ValueError: the model's algorithm, observation or action size does not match.
    """
    meta = read_export_meta(export_dir)
    algo = type(model).__name__.lower()
    if algo not in meta["files"]:
        raise ValueError(
            f"{export_dir} has no export for {algo.upper()} (has {sorted(meta['files'])})"
        )
    obs_dim = int(np.prod(model.observation_space.shape))
    act_dim = int(np.prod(model.action_space.shape))
    if (obs_dim, act_dim) != (meta["obs_dim"], meta["act_dim"]):
        raise ValueError(
            f"{export_dir}: BC policy is for observations of size {meta['obs_dim']} and actions of "
            f"size {meta['act_dim']}, the model has {obs_dim} and {act_dim}; train BC on data "
            "from the same env configuration"
        )
    state = _exported_state_dict(Path(export_dir) / meta["files"][algo], meta, algo, model.device)
    try:
        model.policy.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"{export_dir}: the {algo.upper()} model's network differs from the export; build "
            f"it with policy_kwargs={meta['policy_kwargs'][algo]} ({e})"
        ) from e
