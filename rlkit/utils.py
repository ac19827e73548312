"""Small shared helpers: core counts, worker defaults, reproducible per-episode seeds."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "available_cores",
    "default_workers",
    "idle_cores",
    "episode_seed",
    "json_ready",
    "write_json_atomic",
    "write_text_atomic",
    "RESULT_FILE",
    "SEED_STREAMS",
]

#: Machine-readable summary every tool writes into its output folder (read by the pipeline).
RESULT_FILE = "result.json"

#: Independent seed streams, so e.g. evaluation tracks never coincide with demo tracks.
SEED_STREAMS: dict[str, int] = {"demo": 0, "eval": 1, "dagger": 2, "rl": 3, "noise": 4}


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def idle_cores() -> int:
    """Cores not busy with other work: all cores minus the 1-minute load average, min 1.

    Used for torch's intra-op threads: on a busy machine extra threads spin against other
    processes (measured on 2 cores with one other busy process: BC trained 5x slower on 2
    threads than on 1), while on an idle one they help.
    """
    cores = available_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return cores
    return max(1, min(cores, cores - round(load)))


def default_workers(kind: str, cores: int | None = None) -> int:
    """Worker counts used when a flag is left unset (the seeds' table).

    ``collect``: cores - 1, min 1, cap 12. ``bc``: cores / 2, min 1, cap 8.
    ``rl``: cores - 1, min 2, cap 8.
    """
    n = available_cores() if cores is None else cores
    if kind == "collect":
        return min(12, max(1, n - 1))
    if kind == "bc":
        return min(8, max(1, n // 2))
    if kind == "rl":
        return min(8, max(2, n - 1))
    raise ValueError(f"kind must be 'collect', 'bc' or 'rl', got {kind!r}")


def episode_seed(seed: int, index: int, stream: str = "demo") -> int:
    """Seed of episode ``index`` of a run seeded with ``seed``.

    Derived only from (run seed, stream, episode index) -- never from the worker that runs
    the episode -- so results are identical for any worker count.
    """
    if stream not in SEED_STREAMS:
        raise ValueError(f"stream must be one of {sorted(SEED_STREAMS)}, got {stream!r}")
    ss = np.random.SeedSequence([int(seed), SEED_STREAMS[stream], int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def json_ready(value: Any) -> Any:
    """A JSON-safe copy: dataclasses and dicts recursively, paths as text, NaN/inf as null,
    numpy scalars and arrays as Python numbers and lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` (made JSON-safe by :func:`json_ready`) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(json_ready(obj), indent=2, allow_nan=False) + "\n")
