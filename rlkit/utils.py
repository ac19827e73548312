"""Small shared helpers: core counts, worker defaults, reproducible per-episode seeds."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "WORKER_RULES",
    "atomic_path",
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

#: Independent seed streams, so the tracks of one use never coincide with another's: ``demo``
#: (collection), ``dagger`` (DAgger labels), ``noise`` (action noise), ``val`` (evaluations
#: during training and the choice of a best checkpoint) and ``test`` (final reports only,
#: never seen during training or selection). RL training cars draw their tracks from their
#: own generators (``RacingVecEnv``: car ``i`` seeded with ``seed + i``).
SEED_STREAMS: dict[str, int] = {"demo": 0, "test": 1, "dagger": 2, "noise": 4, "val": 5}


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


#: The seeds' worker counts when a flag is left unset: kind -> (the rule as shown in help
#: texts and summaries, the rule on the core count). The one home of these formulas.
WORKER_RULES: dict[str, tuple[str, Callable[[int], int]]] = {
    "collect": ("cores - 1, min 1, cap 12", lambda n: min(12, max(1, n - 1))),
    "bc": ("cores / 2, min 1, cap 8", lambda n: min(8, max(1, n // 2))),
    "rl": ("cores - 1, min 2, cap 8", lambda n: min(8, max(2, n - 1))),
}


def default_workers(kind: str, cores: int | None = None) -> int:
    """The worker count of :data:`WORKER_RULES` ``kind`` on ``cores`` (default: the cores
    this process may use)."""
    if kind not in WORKER_RULES:
        raise ValueError(f"kind must be one of {sorted(WORKER_RULES)}, got {kind!r}")
    return WORKER_RULES[kind][1](available_cores() if cores is None else cores)


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


_TMP_COUNTER = itertools.count()


def temp_name(path: Path) -> Path:
    """A hidden sibling of ``path`` unique to this process: ``.NAME.tmp-PID-K.SUFFIX``.

    The suffix is kept because some writers add one when it is missing (SB3's ``save``
    appends ``.zip``); ``.tmp-PID`` lets :func:`rlkit.rundir.clean_stale_temps` remove
    the leftovers of a killed process and nothing else.
    """
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{next(_TMP_COUNTER)}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is synced and renamed onto it.

    Example::

        with atomic_path(out / "model.zip") as tmp:
            model.save(tmp)

    On any exception (a full disk, Ctrl-C) the temporary file is removed and ``path`` keeps
    its previous content, so a crash never leaves a half-written file under its final name
    or a temporary one that fills the disk. The file is created like any other file, so its
    mode follows the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a size limit: say which file could not be written
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def replace_dir(tmp: Path, root: Path) -> None:
    """Move the finished folder ``tmp`` onto its sibling ``root`` with ``os.replace``.

    An existing ``root`` is moved aside first and removed only once the new folder is in
    place; if the final rename fails the previous one is put back.
    """
    if not (root.exists() or root.is_symlink()):
        os.replace(tmp, root)
        return
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    os.replace(root, old)
    try:
        os.replace(tmp, root)
    except BaseException:
        os.replace(old, root)  # put the previous folder back
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "x", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` (made JSON-safe by :func:`json_ready`) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(json_ready(obj), indent=2, allow_nan=False) + "\n")


def from_json(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a result dataclass from its :func:`json_ready` form (``result.json``):
    paths from text, ``null`` floats as NaN, ``dict[str, Dataclass]`` fields recursively."""
    import typing

    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, tp = data[f.name], hints[f.name]
        args = typing.get_args(tp)
        if tp is Path:
            value = Path(value)
        elif tp is float and value is None:
            value = math.nan
        elif typing.get_origin(tp) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
            value = {k: from_json(args[1], v) for k, v in (value or {}).items()}
        elif tp == dict[str, float] and isinstance(value, dict):
            value = {k: math.nan if v is None else v for k, v in value.items()}
        kwargs[f.name] = value
    return cls(**kwargs)


def resolve_device(name: str) -> Any:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a CUDA device is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def trim_csv(path: Path, keep: Any, header: list[str] | None = None) -> int:
    """Rewrite a log CSV keeping its header and the rows for which ``keep(row)`` is true.

    Used on resume: rows written after the checkpoint describe work that is redone, so they
    go (a resumed log then reads like an uninterrupted one). Malformed rows (a line cut by
    a kill) are dropped too. ``header`` replaces a missing or empty first line. Returns the
    number of rows kept.
    """
    import csv

    rows = list(csv.reader(path.open(newline=""))) if path.is_file() else []
    head = rows[0] if rows and rows[0] else header
    if head is None:
        return 0
    kept = []
    for r in rows[1:]:
        try:
            if len(r) == len(head) and keep(r):
                kept.append(r)
        except (ValueError, IndexError):
            continue
    with atomic_path(path) as tmp, open(tmp, "x", newline="") as f:
        csv.writer(f).writerows([head, *kept])
    return len(kept)


def torch_save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (see :func:`atomic_path`)."""
    import torch

    # Serialised in memory, then written by Python: a full disk then raises OSError
    # (ENOSPC/EFBIG) from write(); torch's own writers report it as "RuntimeError:
    # unexpected pos". Checkpoints here are a few MB.
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        fh.write(buf.getbuffer())
    return Path(path)


def worker_setup() -> None:
    """Call first in a worker process rlkit starts (collection pool, subprocess envs).

    Ctrl-C reaches the whole process group: the worker ignores it and the parent, which
    handles it, stops the workers (a worker dying of it would print its own traceback).
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
