"""Episode dataset for the world model: random subsequences, whole time-major batches.

Time indices of one batch item (a subsequence of ``seq_len`` = L actions starting at step i)::

    obs      o_i  o_i+1 ... o_i+L        L+1 frames, uint8 [0, 255]
    action      a_i  a_i+1 ... a_i+L-1   L actions, a_t is taken after seeing o_t
    reward      r_i  r_i+1 ... r_i+L-1   r_t follows a_t (it is predicted from the state at t+1)
    terminal    d_i  ...        d_i+L-1  the env terminated after a_t

An episode that ended in termination (the car left the road) is sampled as if it continued
in an absorbing state: windows may start at any of its actions, and the steps after its end
repeat its last frame with reward 0, ``terminal`` True and uniformly random actions. So
every crash is trained on, however early it came (a short episode is not dropped), and the
model learns that nothing follows one, whatever the actions -- the planner then sees a crash
as the end of all reward, not only as one penalty (the absorbing states of Kostrikov et al.
2019, "Discriminator-Actor-Critic"). Episodes cut by the time limit are sampled only whole
windows inside them, as before; one shorter than ``seq_len`` is not sampled.

A batch stacks B items **time-major**: obs (L+1, B, 64, 64, 3), action (L, B, A),
reward (L, B), terminal (L, B) -- the layout of the seed's ``collate_episode_batch`` -- but
it is built in one pass: B slices copied into one buffer of the final layout and dtype
(uint8 by default), no per-item float conversion and no ``torch.stack``. The conversion to
float happens once per batch on the training device (:func:`batch_to_device`).

Where episodes live (the loading options):

* default: all episodes in RAM as uint8, loaded ``loading_workers`` files at a time;
* ``preload_dtype`` float16/float32: pre-converted to the model's range [-0.5, 0.5] in RAM
  (2x/4x the memory; the batch then needs no conversion but moves 2x/4x the bytes);
* ``cache_mb``: lazy, for datasets larger than RAM: only the file list is kept; episodes
  are decompressed on demand and kept in an LRU cache bounded by ``cache_mb`` megabytes
  (with DataLoader workers, each worker process holds its own cache of that size).

``__len__`` is the virtual length ``batch_size * train_steps``, so a DataLoader over it
always yields ``train_steps`` full batches even with 5 episodes. Items are drawn uniformly
over all valid (episode, start) pairs, i.e. an episode is chosen in proportion to its
number of valid start positions. The random draws of a batch depend only on (seed,
iteration, the batch's first index), so batches are the same for any ``num_workers``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np
import torch

from rlkit.planet.storage import EpisodeInfo, EpisodeStorage, load_episode

__all__ = ["Batch", "EpisodeDataset", "batch_to_device", "obs_to_model"]

logger = logging.getLogger(__name__)

PRELOAD_DTYPES = {"uint8": np.uint8, "float16": np.float16, "float32": np.float32}


class Batch(NamedTuple):
    """A time-major batch (numpy arrays or torch tensors); see the module docstring."""

    obs: Any  # (L+1, B, H, W, 3) uint8 [0, 255], or float in [-0.5, 0.5] when preloaded
    action: Any  # (L, B, A) float32
    reward: Any  # (L, B) float32
    terminal: Any  # (L, B) bool


def obs_to_model(obs: torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8 [0, 255] (or float already in [-0.5, 0.5]) -> float32
    (..., 3, H, W) in [-0.5, 0.5], computed on ``obs``'s device."""
    x = obs.movedim(-1, -3)
    if x.dtype == torch.uint8:
        return x.float().div_(255.0).sub_(0.5)
    return x.float()


def batch_to_device(batch: Batch, device: torch.device) -> Batch:
    """Move a batch to ``device`` (uint8 over the bus) and convert it there, once."""
    nb = device.type == "cuda"

    def move(x: Any) -> torch.Tensor:
        t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
        return t.to(device, non_blocking=nb)

    return Batch(
        obs_to_model(move(batch.obs)),
        move(batch.action).float(),
        move(batch.reward).float(),
        move(batch.terminal),
    )


def _to_preload(obs: np.ndarray, dtype: str) -> np.ndarray:
    """uint8 [0, 255] -> ``dtype``; floats are stored in the model's range [-0.5, 0.5]."""
    if dtype == "uint8":
        return obs
    out = obs.astype(PRELOAD_DTYPES[dtype])
    out *= 1.0 / 255.0
    out -= 0.5
    return out


class EpisodeDataset(torch.utils.data.Dataset):
    """Random ``seq_len`` subsequences of the episodes of an :class:`EpisodeStorage`.

    Args:
        storage: The episode folder (its ``workers`` threads load and validate files).
        seq_len: Actions per item (L); episodes with fewer actions are not sampled unless
            they ended in termination (then padded with absorbing steps).
        batch_size: Items per batch (B).
        train_steps: Batches per iteration; ``len(self) = batch_size * train_steps``.
        preload_dtype: Dtype of the frames held in RAM (``uint8``, ``float16``, ``float32``).
        cache_mb: If set, lazy mode: frames are read on demand and kept in an LRU cache of
            at most this many megabytes (``preload_dtype`` must then be ``uint8``).
        seed: Seed of the subsequence draws.
    """

    def __init__(
        self,
        storage: EpisodeStorage,
        seq_len: int,
        batch_size: int,
        train_steps: int,
        preload_dtype: str = "uint8",
        cache_mb: float | None = None,
        seed: int = 0,
    ) -> None:
        if seq_len < 1 or batch_size < 1 or train_steps < 1:
            raise ValueError(
                f"seq_len, batch_size and train_steps must be >= 1, got "
                f"{seq_len}, {batch_size}, {train_steps}"
            )
        if preload_dtype not in PRELOAD_DTYPES:
            raise ValueError(
                f"preload_dtype must be one of {', '.join(PRELOAD_DTYPES)}, got {preload_dtype!r}"
            )
        if cache_mb is not None and preload_dtype != "uint8":
            raise ValueError("the LRU cache keeps uint8 frames; do not combine it with preloading")
        if cache_mb is not None and cache_mb <= 0:
            raise ValueError(f"cache_size must be > 0 MB, got {cache_mb}")
        self.storage, self.seq_len = storage, seq_len
        self.batch_size, self.train_steps = batch_size, train_steps
        self.preload_dtype, self.seed = preload_dtype, seed
        self.cache_bytes = None if cache_mb is None else int(cache_mb * 1024**2)
        self.iteration = 0
        self.infos: list[EpisodeInfo] = []  # sampled episodes (long enough or terminated)
        self.episodes: list[dict[str, np.ndarray]] = []  # RAM mode: parallel to infos
        self._known: set[Any] = set()  # every path seen, short episodes included
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cache_used = 0
        self.cache_hits = self.cache_misses = 0
        self._starts = np.zeros(0, dtype=np.int64)  # cumulative valid start counts
        self._buffers: Batch | None = None
        self._frame_shape: tuple[int, int] | None = None
        self.refresh()

    # ---------------------------------------------------------------- episodes
    @property
    def lazy(self) -> bool:
        return self.cache_bytes is not None

    def refresh(self) -> int:
        """Add the episode files written since the last refresh; return how many were added.

        Only new files are validated and (in RAM mode) decompressed.
        """
        new = self.storage.discover(skip=self._known)
        self._known.update(i.path for i in new)
        usable = [i for i in new if i.length >= self.seq_len or i.terminated]
        if len(usable) < len(new):
            logger.warning(
                "%d episode(s) cut by the time limit before seq_len=%d actions are not sampled; "
                "lower --seq-len or raise --max-episode-steps to train on them",
                len(new) - len(usable),
                self.seq_len,
            )
        if not self.lazy:

            def convert(ep: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                ep["obs"] = _to_preload(ep["obs"], self.preload_dtype)
                return ep

            loaded = self.storage.load(usable, convert)  # converted in the loading threads
            usable = [info for info, _ in loaded]
            self.episodes.extend(ep for _, ep in loaded)
        self.infos.extend(usable)
        counts = np.array([self._windows(i) for i in self.infos], dtype=np.int64)
        self._starts = np.cumsum(counts)
        return len(usable)

    def _windows(self, info: EpisodeInfo) -> int:
        """Start positions of an episode: every action when it terminated (absorbing padding
        after it), else the windows of ``seq_len`` inside it."""
        return info.length if info.terminated else info.length - self.seq_len + 1

    @property
    def num_episodes(self) -> int:
        return len(self.infos)

    @property
    def num_steps(self) -> int:
        """Environment steps (actions) of the sampled episodes."""
        return int(sum(i.length for i in self.infos))

    @property
    def nbytes(self) -> int:
        """Bytes of episode data held in RAM (the cache's content in lazy mode)."""
        if self.lazy:
            return self._cache_used
        return int(sum(sum(a.nbytes for a in ep.values()) for ep in self.episodes))

    @property
    def cache_hit_rate(self) -> float:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else float("nan")

    def _episode(self, k: int) -> dict[str, np.ndarray]:
        if not self.lazy:
            return self.episodes[k]
        ep = self._cache.get(k)
        if ep is not None:
            self._cache.move_to_end(k)
            self.cache_hits += 1
            return ep
        self.cache_misses += 1
        ep = load_episode(self.infos[k].path)
        size = sum(a.nbytes for a in ep.values())
        while self._cache and self._cache_used + size > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cache_used -= sum(a.nbytes for a in old.values())
        if size <= self.cache_bytes:  # an episode larger than the cache is not kept
            self._cache[k] = ep
            self._cache_used += size
        return ep

    # ---------------------------------------------------------------- sampling
    def set_iteration(self, iteration: int) -> None:
        """Select the random stream of this training iteration."""
        self.iteration = int(iteration)

    def __len__(self) -> int:
        return self.batch_size * self.train_steps

    def sample_positions(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` (episode, start) pairs, uniform over all valid pairs."""
        if not self.infos:
            raise RuntimeError(
                f"no episode has >= seq_len={self.seq_len} actions or ends in termination in "
                f"{self.storage.root}; "
                "collect episodes first or lower --seq-len"
            )
        flat = rng.integers(0, self._starts[-1], size=n)
        ep = np.searchsorted(self._starts, flat, side="right")
        start = flat - np.concatenate([[0], self._starts])[ep]
        return ep, start

    def _alloc(self, n: int) -> Batch:
        info = self.infos[0]
        if self._frame_shape is None:  # read once (in lazy mode it costs a cache access)
            self._frame_shape = self._episode(0)["obs"].shape[1:3]
        h, w = self._frame_shape
        L = self.seq_len
        return Batch(
            np.empty((L + 1, n, h, w, 3), dtype=PRELOAD_DTYPES[self.preload_dtype]),
            np.empty((L, n, info.action_dim), dtype=np.float32),
            np.empty((L, n), dtype=np.float32),
            np.empty((L, n), dtype=bool),
        )

    def gather(self, episodes: np.ndarray, starts: np.ndarray, out: Batch | None = None) -> Batch:
        """Copy the subsequences (episodes[b], starts[b]) into a time-major batch.

        Args:
            episodes: (B,) episode positions in ``self.infos``.
            starts: (B,) first action index of each subsequence.
            out: Buffers to fill (as returned by a previous call with the same B), or None.
        """
        n, L = len(episodes), self.seq_len
        if out is None or out.obs.shape[1] != n:
            out = self._alloc(n)
        # Each episode is fetched once per batch (one decompression per batch in lazy mode).
        order = np.argsort(episodes, kind="stable")
        current, ep = -1, None
        for b in order:
            k, i = int(episodes[b]), int(starts[b])
            if k != current:
                current, ep = k, self._episode(k)
            n_real = min(L, len(ep["action"]) - i)  # < L: a terminated episode's end
            out.obs[: n_real + 1, b] = ep["obs"][i : i + n_real + 1]
            out.action[:n_real, b] = ep["action"][i : i + n_real]
            out.reward[:n_real, b] = ep["reward"][i : i + n_real]
            out.terminal[:n_real, b] = ep["terminal"][i : i + n_real]
            if n_real < L:  # absorbing steps: the last frame, no reward, any action
                rng = np.random.default_rng([self.seed, self.iteration, k, i])
                out.obs[n_real + 1 :, b] = ep["obs"][-1]
                out.action[n_real:, b] = rng.uniform(-1, 1, out.action[n_real:, b].shape)
                out.reward[n_real:, b] = 0.0
                out.terminal[n_real:, b] = True
        return out

    def _rng(self, first_index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.iteration, int(first_index)])

    def sample_batch(self, first_index: int = 0, reuse: bool = False) -> Batch:
        """One batch of ``batch_size`` items, drawn from the stream of ``first_index``.

        Args:
            first_index: Virtual index of the batch's first item (selects the draws).
            reuse: Fill the same buffers as the previous call (in-process training only:
                the caller must be done with the previous batch).
        """
        ep, start = self.sample_positions(self._rng(first_index), self.batch_size)
        out = self.gather(ep, start, self._buffers if reuse else None)
        if reuse:
            self._buffers = out
        return out

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """One item, (T, ...)-shaped (for inspection; training uses whole batches)."""
        ep, start = self.sample_positions(self._rng(index), 1)
        b = self.gather(ep, start)
        return {k: v[:, 0] for k, v in b._asdict().items()}

    def __getitems__(self, indices: list[int]) -> Batch:
        """A whole batch for a DataLoader with ``collate_fn=keep_batch`` (torch >= 2.1)."""
        ep, start = self.sample_positions(self._rng(indices[0]), len(indices))
        b = self.gather(ep, start)
        return Batch(*(torch.from_numpy(x) for x in b))


def keep_batch(batch: Batch) -> Batch:
    """DataLoader ``collate_fn``: ``__getitems__`` already built the batch."""
    return batch
