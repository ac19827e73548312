"""Episodes on disk: one compressed ``.npz`` per episode, collision-free names, atomic writes.

Layout of ``data_dir``::

    data_dir/
    ├── env.json               env name, action repeat, image size, action_dim (checked on reuse)
    ├── episode_000000.npz     first episode
    ├── episode_000001.npz
    └── ...

Each episode file holds (T = number of actions)::

    obs        uint8   (T+1, 64, 64, 3)   obs[t] is seen before action[t]; obs[T] is the last
    action     float32 (T, A)             in [-1, 1]
    reward     float32 (T,)               reward[t] follows action[t]
    terminal   bool    (T,)               the env terminated after action[t] (not a time limit)
    truncated  bool    (T,)               the episode was cut by a time limit after action[t]

The next index is the largest existing index + 1 (never the count, so deleting a file never
makes two episodes share a name). A file is written under a hidden temporary name and then
hard-linked to its final name, which fails if another writer took that name first (the
writer then moves on to the next index); where hard links are unsupported it is renamed with
``os.replace``. A crash therefore never leaves a half-written ``episode_*.npz``.

Discovery lists ``episode_*.npz`` and validates each file's header (keys, dtypes, shapes) in a
thread pool; unreadable, truncated or foreign files are skipped with a warning naming them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EpisodeFormatError", "EpisodeInfo", "EpisodeStorage", "load_episode"]

logger = logging.getLogger(__name__)

EPISODE_RE = re.compile(r"^episode_(\d{6,})\.npz$")
KEYS = ("obs", "action", "reward", "terminal", "truncated")
REQUIRED = ("obs", "action", "reward", "terminal")  # 'truncated' may be absent (seed format)


class EpisodeFormatError(ValueError):
    """An episode file that cannot be used (unreadable, truncated or foreign)."""


@dataclass(frozen=True)
class EpisodeInfo:
    """A validated episode file: its index, path, number of actions and size on disk."""

    index: int
    path: Path
    length: int  # T, the number of actions (obs has T + 1 frames)
    action_dim: int
    nbytes: int  # decoded size of all arrays, bytes


def _read_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of the arrays of an ``.npz`` without decompressing the data."""
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if not name.endswith(".npy"):
                continue
            with zf.open(name) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            headers[name[:-4]] = (tuple(shape), np.dtype(dtype))
    return headers


def inspect_episode(path: Path, index: int = -1) -> EpisodeInfo:
    """Validate an episode file's structure from its headers.

    Raises:
        EpisodeFormatError: The file is not a zip, misses a key, or has wrong dtypes/shapes.
    """
    try:
        h = _read_headers(path)
    except (OSError, zipfile.BadZipFile, zlib.error, ValueError, EOFError) as e:
        raise EpisodeFormatError(f"{path}: unreadable or truncated ({e})") from e
    missing = [k for k in REQUIRED if k not in h]
    if missing:
        raise EpisodeFormatError(
            f"{path}: not an rlkit episode (missing {', '.join(missing)}; has {sorted(h)})"
        )
    (obs_shape, obs_dt), (act_shape, act_dt) = h["obs"], h["action"]
    if obs_dt != np.uint8 or len(obs_shape) != 4 or obs_shape[1:] != (64, 64, 3):
        raise EpisodeFormatError(
            f"{path}: obs must be uint8 (T+1, 64, 64, 3), got {obs_dt} {obs_shape}"
        )
    t = obs_shape[0] - 1
    if t < 1 or len(act_shape) != 2 or act_shape[0] != t:
        raise EpisodeFormatError(
            f"{path}: action must be (T, A) with T = len(obs) - 1 = {t}, got {act_shape}"
        )
    for key in ("reward", "terminal", "truncated"):
        if key in h and h[key][0] != (t,):
            raise EpisodeFormatError(f"{path}: {key} must have shape ({t},), got {h[key][0]}")
    nbytes = sum(int(np.prod(s)) * d.itemsize for s, d in h.values())
    del act_dt
    return EpisodeInfo(index, path, t, act_shape[1], nbytes)


def load_episode(path: Path) -> dict[str, np.ndarray]:
    """Read and decompress one episode (CRC-checked): a dict of the arrays in :data:`KEYS`.

    Raises:
        EpisodeFormatError: If the file cannot be read or decompressed, or keys are missing.
    """
    try:
        with np.load(path) as z:
            ep = {k: z[k] for k in KEYS if k in z.files}
    except (OSError, zipfile.BadZipFile, zlib.error, ValueError, EOFError, KeyError) as e:
        raise EpisodeFormatError(f"{path}: unreadable or truncated ({e})") from e
    missing = [k for k in REQUIRED if k not in ep]
    if missing:
        raise EpisodeFormatError(f"{path}: not an rlkit episode (missing {', '.join(missing)})")
    if "truncated" not in ep:
        ep["truncated"] = np.zeros_like(ep["terminal"], dtype=bool)
    ep["action"] = ep["action"].astype(np.float32, copy=False)
    ep["reward"] = ep["reward"].astype(np.float32, copy=False)
    return ep


class EpisodeStorage:
    """The episode folder of a run: add episodes, discover and validate existing ones.

    Args:
        root: The data folder (created if missing).
        workers: Threads for discovery/validation (1 = serial).
    """

    def __init__(self, root: str | Path, workers: int = 4) -> None:
        self.root = Path(root)
        self.workers = max(1, int(workers))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(
                f"data_dir {self.root}: cannot create it ({e.strerror or e}); "
                "choose a writable folder"
            ) from e
        self._warned: set[str] = set()

    # -- names
    def _indexed(self) -> list[tuple[int, Path]]:
        out = []
        for entry in os.scandir(self.root):
            m = EPISODE_RE.match(entry.name)
            if m and entry.is_file():
                out.append((int(m.group(1)), Path(entry.path)))
        out.sort()
        return out

    def next_index(self) -> int:
        """Largest existing episode index + 1 (0 for an empty folder)."""
        indexed = self._indexed()
        return indexed[-1][0] + 1 if indexed else 0

    def path_of(self, index: int) -> Path:
        return self.root / f"episode_{index:06d}.npz"

    # -- env description
    def check_env(self, spec: dict[str, Any]) -> None:
        """Record ``spec`` in ``env.json``, or check it equals the recorded one.

        Raises:
            ValueError: The folder holds episodes of another env (name, repeat, action size).
        """
        path = self.root / "env.json"
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: unreadable ({e}); delete it to re-create it") from e
            diff = {k: (old.get(k), v) for k, v in spec.items() if old.get(k) != v}
            if diff:
                text = ", ".join(
                    f"{k}: folder has {a!r}, run wants {b!r}" for k, (a, b) in diff.items()
                )
                raise ValueError(
                    f"{self.root} holds episodes of another environment ({text}); "
                    "use another data_dir or the matching --env/--action-repeat"
                )
            return
        tmp = path.with_name(f".env.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(spec, indent=2) + "\n")
        os.replace(tmp, path)

    # -- writing
    def add_episode(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        terminal: np.ndarray,
        truncated: np.ndarray | None = None,
    ) -> Path:
        """Write one episode atomically under the next free index; return its path.

        Args:
            obs: uint8 (T+1, H, W, 3).
            action: (T, A), stored as float32.
            reward: (T,), stored as float32.
            terminal: (T,) bool, True where the env terminated (not a time limit).
            truncated: (T,) bool, True where a time limit cut the episode (default: none).

        Raises:
            ValueError: Inconsistent shapes or dtypes.
        """
        obs = np.asarray(obs)
        t = len(obs) - 1
        arrays = {
            "obs": obs,
            "action": np.asarray(action, dtype=np.float32).reshape(t, -1),
            "reward": np.asarray(reward, dtype=np.float32).reshape(-1),
            "terminal": np.asarray(terminal, dtype=bool).reshape(-1),
            "truncated": (
                np.zeros(t, bool) if truncated is None else np.asarray(truncated, bool).ravel()
            ),
        }
        if obs.dtype != np.uint8 or obs.ndim != 4 or t < 1:
            raise ValueError(
                f"obs must be uint8 (T+1, H, W, 3) with T >= 1, got {obs.dtype} {obs.shape}"
            )
        for key in ("reward", "terminal", "truncated"):
            if arrays[key].shape != (t,):
                raise ValueError(f"{key} must have shape ({t},), got {arrays[key].shape}")
        tmp = self.root / f".episode.tmp-{os.getpid()}-{id(arrays)}.npz"
        try:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            index = self.next_index()
            while True:
                final = self.path_of(index)
                try:
                    os.link(tmp, final)  # fails if the name exists: never overwrite
                    break
                except FileExistsError:
                    index += 1
                except OSError:  # no hard links on this filesystem
                    if final.exists():
                        index += 1
                        continue
                    os.replace(tmp, final)
                    break
        finally:
            tmp.unlink(missing_ok=True)
        return final

    # -- discovery
    def _warn_once(self, path: Path, msg: str) -> None:
        if str(path) not in self._warned:
            self._warned.add(str(path))
            logger.warning("skipping %s", msg)

    def discover(self, skip: set[Path] | frozenset[Path] = frozenset()) -> list[EpisodeInfo]:
        """Validate every episode file not in ``skip``; return them sorted by index.

        Validation reads only each file's zip directory and array headers, ``workers``
        files at a time. Bad files are skipped with a warning (once per file and process).
        """
        todo = [(i, p) for i, p in self._indexed() if p not in skip]

        def check(item: tuple[int, Path]) -> EpisodeInfo | None:
            try:
                return inspect_episode(item[1], item[0])
            except EpisodeFormatError as e:
                self._warn_once(item[1], str(e))
                return None

        if self.workers > 1 and len(todo) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                infos = list(pool.map(check, todo))
        else:
            infos = [check(t) for t in todo]
        return [i for i in infos if i is not None]

    def load(
        self,
        infos: list[EpisodeInfo],
        transform: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    ) -> list[tuple[EpisodeInfo, dict[str, np.ndarray]]]:
        """Decompress the episodes of ``infos`` (``workers`` threads; zlib releases the GIL).

        Args:
            infos: Episodes from :meth:`discover`.
            transform: Applied to each episode in its loading thread (e.g. the conversion
                of preloaded frames, which numpy also runs without the GIL).

        Files that fail to decompress (e.g. truncated after validation) are skipped with a
        warning.
        """

        def read(info: EpisodeInfo) -> tuple[EpisodeInfo, dict[str, np.ndarray]] | None:
            try:
                ep = load_episode(info.path)
                return info, (transform(ep) if transform is not None else ep)
            except EpisodeFormatError as e:
                self._warn_once(info.path, str(e))
                return None

        if self.workers > 1 and len(infos) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                out = list(pool.map(read, infos))
        else:
            out = [read(i) for i in infos]
        return [o for o in out if o is not None]

    def __len__(self) -> int:
        return len(self._indexed())
