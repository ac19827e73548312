"""A process pool whose results come back through shared memory, and that fails instead of
hanging when a worker dies.

Results travel back from the workers through shared memory: a collection chunk is ~100 bytes
a frame (25 MB for 256 cars), and pushing that through the pool's pipe 64 KiB at a time took
0.3-0.6 s per chunk on 2 busy cores, during which the worker sat idle. A worker copies the
arrays of its result into one :class:`~multiprocessing.shared_memory.SharedMemory` block and
sends only the skeleton; the parent copies them out and unlinks the block.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from multiprocessing import shared_memory
from multiprocessing.pool import TERMINATE
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.utils import worker_setup

__all__ = ["WorkerDied", "from_shared", "keep_freed_memory", "map_unordered", "to_shared"]

SHM_DIR = "/dev/shm"


class WorkerDied(RuntimeError):
    """A worker process was killed (out of memory, SIGKILL): its task would never finish."""


def keep_freed_memory() -> None:
    """Let glibc keep freed blocks of up to 64 MiB for reuse instead of returning them to the OS.

    The simulator's per-step temporaries are a few hundred KiB: by default glibc maps fresh
    pages for each and unmaps them on free until its adaptive thresholds catch up, which cost
    ~100,000 page faults (0.4 s) in each process's first batch. No-op without glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 64 << 20)
    mallopt(m_trim_threshold, 256 << 20)


def _init_worker() -> None:
    """Pool initializer: :func:`rlkit.utils.worker_setup` (Ctrl-C is the parent's: it stops
    the pool and removes what was half-written; a dead parent takes its workers along)."""
    worker_setup()
    keep_freed_memory()


def _worker_run(job: tuple[Callable[..., dict[str, Any]], str, tuple[Any, ...]]) -> dict[str, Any]:
    """Worker entry: ``fn(*args)``, its arrays in one shared-memory block named ``name`` (the
    parent finds the blocks of an interrupted run by their prefix)."""
    fn, name, args = job
    return to_shared(fn(*args), name=name)


def _array_leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _array_leaves(value, (*prefix, key))
        elif isinstance(value, np.ndarray):
            yield (*prefix, key), value


def to_shared(result: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """Move the arrays of ``result`` (a tree of dicts) into one :class:`SharedMemory` block;
    returns the skeleton: the other top-level values and ``shared``, the block's layout.

    Falls back to returning ``result`` as is (pickled through the pipe) when shared memory is
    missing or has less than 4x the block free (small ``/dev/shm`` in containers).
    """
    leaves = list(_array_leaves(result))
    offsets, total = [], 0
    for _, arr in leaves:
        offsets.append(total)
        total += -(-arr.nbytes // 64) * 64  # 64-byte aligned
    try:
        st = os.statvfs(SHM_DIR)
        if st.f_bavail * st.f_frsize < 4 * total:
            return result
        try:
            block = shared_memory.SharedMemory(name=name, create=True, size=max(total, 1))
        except FileExistsError:  # a block of a killed run with a reused pid: any free name
            block = shared_memory.SharedMemory(create=True, size=max(total, 1))
    except OSError:
        return result
    layout = []
    try:
        for (path, arr), off in zip(leaves, offsets, strict=True):
            view = np.ndarray(arr.shape, arr.dtype, buffer=block.buf, offset=off)
            view[...] = arr
            layout.append((path, arr.dtype.str, arr.shape, off))
            del view
    except BaseException:
        block.close()
        block.unlink()
        raise
    block.close()
    skeleton = {k: v for k, v in result.items() if not isinstance(v, (dict, np.ndarray))}
    return {**skeleton, "shared": (block.name, layout)}


def from_shared(msg: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`to_shared` in the parent: copy the arrays out, free the block."""
    if "shared" not in msg:
        return msg
    name, layout = msg.pop("shared")
    block = shared_memory.SharedMemory(name=name)
    try:
        for path, dtype, shape, off in layout:
            node = msg
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = np.ndarray(shape, np.dtype(dtype), buffer=block.buf, offset=off).copy()
    finally:
        block.close()
        block.unlink()
    return msg


def _unlink_blocks(prefix: str) -> None:
    """Unlink the shared-memory blocks named ``prefix*`` (results nobody will read)."""
    for path in Path(SHM_DIR).glob(f"{prefix}*"):
        try:
            block = shared_memory.SharedMemory(name=path.name)
        except OSError:
            continue
        block.close()
        with contextlib.suppress(OSError):
            block.unlink()


def imap_watching_workers(pool: Any, jobs: list[Any]) -> Iterator[dict[str, Any]]:
    """``pool.imap_unordered`` that raises :class:`WorkerDied` instead of hanging when a
    worker process dies.

    A worker that raises is reported by the pool itself; one that is killed (out of
    memory, SIGKILL) would leave its task pending forever, so the original worker
    processes are watched while waiting.
    """
    procs = list(pool._pool)  # the workers this pool started; they only exit if killed
    it = pool.imap_unordered(_worker_run, jobs)
    for _ in range(len(jobs)):
        while True:
            try:
                yield it.next(timeout=0.5)
                break
            except mp.TimeoutError:
                dead = [p for p in procs if p.exitcode is not None]
                if dead:
                    _unjam(pool)
                    raise WorkerDied(
                        f"worker process {dead[0].pid} died with exit code {dead[0].exitcode} "
                        "(killed, or out of memory?)"
                    ) from None


def _unjam(pool: Any) -> None:
    """Make ``pool.terminate()`` safe after a worker was killed. A worker killed inside the
    ``get`` of a task or the ``put`` of a result leaves that queue's lock held forever, and
    CPython's ``Pool.terminate`` then blocks on it (seen: a SIGKILL during a result's
    write). Stop the pool from starting replacements, kill its workers, then free the two
    locks only workers take (this process holds the other ends of the queues)."""
    handler = pool._worker_handler
    handler._state = TERMINATE
    pool._change_notifier.put(None)
    handler.join(timeout=5)
    for proc in pool._pool:
        if proc.exitcode is None:
            proc.kill()
    for proc in pool._pool:
        proc.join(timeout=5)
    for lock in (pool._inqueue._rlock, pool._outqueue._wlock):
        if lock is not None:
            lock.acquire(block=False)  # held by a dead worker, or free: either way ...
            lock.release()  # ... free now


def _pool_context(preload: str | None) -> mp.context.BaseContext:
    """forkserver where available (safe with threads, cheap per worker), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        if preload:
            ctx.set_forkserver_preload([preload])
        return ctx
    return mp.get_context("spawn")


def map_unordered(
    fn: Callable[..., dict[str, Any]],
    tasks: list[tuple[Any, ...]],
    workers: int,
    prefix: str,
    *,
    preload: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``fn(*task)`` for every task as they finish: in this process for one worker,
    else from a pool of ``workers`` processes (forkserver, ``preload`` imported once in it)
    whose results come back through shared-memory blocks named ``prefix<task>``.

    ``fn`` returns a dict whose array values (in nested dicts too) travel through shared
    memory. Closing the generator (Ctrl-C, an error downstream) terminates the pool and
    frees the blocks of results nobody read.

    Raises:
        WorkerDied: a worker process was killed.
        Exception: what ``fn`` raised in a worker (its remote traceback as ``__cause__``).
    """
    if workers == 1:
        keep_freed_memory()
        for task in tasks:
            yield fn(*task)
        return
    jobs = [(fn, f"{prefix}{i}", task) for i, task in enumerate(tasks)]
    try:
        ctx = _pool_context(preload)
        with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker) as pool:
            for msg in imap_watching_workers(pool, jobs):
                yield from_shared(msg)
    finally:
        # the pool is terminated: free the blocks of results never consumed (Ctrl-C, a
        # failed write), or the resource tracker warns about them at exit
        _unlink_blocks(prefix)
