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

import functools
import io
import json
import logging
import math
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.rundir import say
from rlkit.utils import temp_name, write_text_atomic

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
    terminated: bool = False  # the env terminated after the last action (not a time limit)


def _read_headers(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], np.dtype]], bool]:
    """Shapes and dtypes of the arrays of an ``.npz``, inflating only each member's first
    bytes, and whether the episode ended in termination (the last value of ``terminal``, a
    small member read whole).

    Also checks that every member's data is all there (the file is not cut short) and that
    its size matches the header.
    """
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    terminated = False
    for name, info, f in _members(path):
        whole = name == "terminal"
        head = f.read(info.compress_size if whole else min(info.compress_size, 4096))
        if info.compress_type == zipfile.ZIP_DEFLATED:
            limit = info.file_size if whole else 4096
            head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(head, max(limit, 1))
        shape, _, dtype, offset = _npy_header(head)
        if offset + math.prod(shape) * dtype.itemsize != info.file_size:
            raise ValueError(f"{name}: size does not match its header")
        headers[name] = (shape, dtype)
        if whole and len(head) == info.file_size and math.prod(shape) > 0:
            terminated = bool(np.frombuffer(head, dtype, offset=offset)[-1])
    return headers, terminated


def inspect_episode(path: Path, index: int = -1) -> EpisodeInfo:
    """Validate an episode file's structure from its headers.

    Raises:
        EpisodeFormatError: The file is not a zip, misses a key, or has wrong dtypes/shapes.
    """
    try:
        h, terminated = _read_headers(path)
    except (OSError, zipfile.BadZipFile, zlib.error, ValueError, EOFError, struct.error) as e:
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
    return EpisodeInfo(index, path, t, act_shape[1], nbytes, terminated)


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (version .. sizes), name len, extra len
_NPY_MAGIC = b"\x93NUMPY"


def _members(path: Path):
    """Yield ``(array name, ZipInfo, file positioned at the member's data)`` per ``.npy``."""
    with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
        size = os.fstat(f.fileno()).st_size
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            f.seek(info.header_offset)
            sig, name_len, extra_len = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
            if sig != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"bad local header for {info.filename}")
            start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            if start + info.compress_size > size:
                raise EOFError(f"{info.filename}: the file ends inside this member")
            f.seek(start)
            yield info.filename[:-4], info, f


@functools.lru_cache(maxsize=256)
def _parse_npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """numpy's own parser (a ``literal_eval``), once per distinct header: episodes of the same
    length share it, and it holds the GIL."""
    fh = io.BytesIO(header)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    if dtype.hasobject:
        raise ValueError("object arrays are not episode data")
    return tuple(shape), bool(fortran), dtype


def _npy_header(buf: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data offset)`` of the ``.npy`` starting ``buf``."""
    if buf[:6] != _NPY_MAGIC or buf[6] not in (1, 2):
        raise ValueError("not a .npy array (or an unsupported .npy version)")
    start = 10 if buf[6] == 1 else 12
    (hlen,) = struct.unpack_from("<H" if buf[6] == 1 else "<I", buf, 8)
    if len(buf) < start + hlen:
        raise ValueError(".npy header is cut short")
    return (*_parse_npy_header(bytes(buf[: start + hlen])), start + hlen)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, each member inflated by one ``zlib.decompress`` call.

    ``np.load`` inflates through ``zipfile`` in 256 KiB steps of Python code, holding the
    GIL between them; one call per member with the exact output size releases the GIL for the
    whole inflate, so loader threads scale (1.9x on 2 cores, against 1.4x), and it is faster
    on one thread too. The zip's CRC-32 is checked. Arrays are read-only views of the data.
    """
    out: dict[str, np.ndarray] = {}
    for name, info, f in _members(path):
        data = f.read(info.compress_size)
        if info.compress_type == zipfile.ZIP_DEFLATED:
            data = zlib.decompress(data, -zlib.MAX_WBITS, max(info.file_size, 1))
        elif info.compress_type != zipfile.ZIP_STORED:
            raise zipfile.BadZipFile(f"{name}: unsupported compression")
        if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
            raise zipfile.BadZipFile(f"{name}: CRC-32 or size mismatch")
        shape, fortran, dtype, offset = _npy_header(data)
        count = math.prod(shape)
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        out[name] = arr.reshape(shape, order="F" if fortran else "C")
    return out


def load_episode(path: Path) -> dict[str, np.ndarray]:
    """Read and decompress one episode (CRC-checked): a dict of the arrays in :data:`KEYS`.

    Raises:
        EpisodeFormatError: If the file cannot be read or decompressed, or keys are missing.
    """
    try:
        arrays = _read_npz(path)
    except (OSError, zipfile.BadZipFile, zlib.error, ValueError, EOFError, struct.error) as e:
        raise EpisodeFormatError(f"{path}: unreadable or truncated ({e})") from e
    ep = {k: arrays[k] for k in KEYS if k in arrays}
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
        workers: Threads that decompress episodes (1 = serial); discovery runs serially.
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
    def indexed(self) -> list[tuple[int, Path]]:
        """(index, path) of every episode file name, by index (contents not checked)."""
        out = []
        for entry in os.scandir(self.root):
            m = EPISODE_RE.match(entry.name)
            if m and entry.is_file():
                out.append((int(m.group(1)), Path(entry.path)))
        out.sort()
        return out

    def next_index(self) -> int:
        """Largest existing episode index + 1 (0 for an empty folder)."""
        indexed = self.indexed()
        return indexed[-1][0] + 1 if indexed else 0

    def path_of(self, index: int) -> Path:
        return self.root / f"episode_{index:06d}.npz"

    # -- env description
    def check_env(self, spec: dict[str, Any], action_dim: int | None = None) -> None:
        """Record ``spec`` in ``env.json``, or check it equals the recorded one.

        Without ``env.json``, episodes already in the folder must have the run's
        ``action_dim`` (the one thing the files themselves tell about their env); then the
        spec is recorded for them, with a visible note. ``env.json`` is never written over
        episodes it cannot describe.

        Raises:
            ValueError: The folder holds episodes of another env (name, repeat, action size,
                camera).
        """
        path = self.root / "env.json"
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: unreadable ({e}); delete it to re-create it") from e
            keys = list(dict.fromkeys([*spec, *old]))  # a key only one side has differs too
            diff = {k: (old.get(k), spec.get(k)) for k in keys if old.get(k) != spec.get(k)}
            if diff:
                text = ", ".join(
                    f"{k}: folder has {a!r}, run wants {b!r}" for k, (a, b) in diff.items()
                )
                raise ValueError(
                    f"{self.root} holds episodes of another environment ({text}); "
                    "use another data_dir or the matching --env, --action-repeat, "
                    "--camera-view or --[no-]dashboard"
                )
            return
        episodes = self.discover()
        if episodes:
            dims = sorted({e.action_dim for e in episodes})
            if action_dim is not None and dims != [action_dim]:
                raise ValueError(
                    f"{self.root} holds {len(episodes)} episodes with {'/'.join(map(str, dims))}"
                    f"-dim actions and no env.json, but --env {spec.get('env')} takes "
                    f"{action_dim}-dim actions; pass the --env they were recorded with (racing: "
                    "2, pendulum: 1) or choose another data_dir"
                )
            say(
                f"{path} was missing: recorded {spec} for the {len(episodes)} episodes there "
                "(their action size fits); if they were recorded otherwise, delete it and rerun "
                "with the matching --env/--action-repeat"
            )
        write_text_atomic(path, json.dumps(spec, indent=2) + "\n")

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
        tmp = temp_name(self.root / "episode.npz")
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

        Validation reads only each file's zip directory and array headers, in this thread:
        it is Python work under the GIL, which threads made ~2x slower on 2 cores
        (``bench/bench_world_model.py``), where inflating (:meth:`load`) scales. Bad files
        are skipped with a warning (once per file and process).
        """
        todo = [(i, p) for i, p in self.indexed() if p not in skip]

        def check(item: tuple[int, Path]) -> EpisodeInfo | None:
            try:
                return inspect_episode(item[1], item[0])
            except EpisodeFormatError as e:
                self._warn_once(item[1], str(e))
                return None

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
        return len(self.indexed())
