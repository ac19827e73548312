"""Ray, the optional engine for work beyond one machine: collection chunks and training seeds.

rlkit runs on one machine without Ray; ``--executor ray`` (``pip install 'rlkit[ray]'``)
sends the same units of work to a Ray cluster: each chunk of demonstration episodes is a
task (:func:`map_ordered`), each training seed is a task too (:mod:`rlkit.rl.seeds`).
Everything the tasks make comes back to the driver through Ray's object store, so the
nodes need rlkit and its dependencies installed, but no shared filesystem.

Which cluster: ``--ray-address`` (a config key too), else ``RAY_ADDRESS``; ``auto`` joins
the cluster this machine is part of. With neither, rlkit starts a Ray instance on this
machine, bound to the loopback address only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: it
takes no connections from other machines), and stops it when the work is done.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "EXECUTORS",
    "INSTALL",
    "ClusterInfo",
    "check_executor",
    "map_ordered",
    "pack_folder",
    "ray_session",
    "unpack_folder",
]

EXECUTORS = ("local", "ray")
INSTALL = "pip install 'rlkit[ray]'"
#: Ray's own switch for the node address: off, a node uses 127.0.0.1 (ray 2.60).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Retries of a task whose worker process or node died (a Python exception is not retried).
TASK_RETRIES = 3


def check_executor(executor: str, flag: str = "--executor") -> None:
    """Raise ValueError (the tools exit with code 2) for an unknown executor, or ``ray``
    without Ray installed, naming the install line."""
    if executor not in EXECUTORS:
        raise ValueError(f"{flag} must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "ray" and not _ray_installed():
        raise ValueError(f"{flag} ray needs Ray, which is not installed; run: {INSTALL}")


def _ray_installed() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # sys.modules["ray"] is None: import ray fails
        return False


@dataclass
class ClusterInfo:
    """The cluster a run used (written into its result, shown in the summaries)."""

    address: str  # "local instance" when rlkit started one
    nodes: int
    cpus: int

    def describe(self) -> str:
        return f"Ray {self.address}: {self.nodes} node(s), {self.cpus} CPUs"


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[ClusterInfo]:
    """Connect to the cluster (``address``, else ``RAY_ADDRESS``) or start a local instance
    with ``num_cpus``; yield what it has; disconnect (and stop a local instance) at the end.
    Inside a process that is already connected (a test, a notebook) that connection is used
    and left open."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        os.environ.setdefault(LOOPBACK_ENV, "0")  # read when ray is imported
    import ray

    owned = not ray.is_initialized()
    if owned:
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address is None:
            kwargs.update(num_cpus=num_cpus, include_dashboard=False)
        ray.init(address=address, **kwargs)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        yield ClusterInfo(
            address if address else "local instance",
            len(nodes),
            int(sum(n["Resources"].get("CPU", 0) for n in nodes)),
        )
    finally:
        if owned:
            ray.shutdown()


def map_ordered(fn: Callable[..., Any], tasks: list[tuple[Any, ...]], window: int) -> Iterator[Any]:
    """``fn(*task)`` for each task as a Ray task (1 CPU, retried on a lost worker or node);
    the results in task order. At most ``window`` tasks are submitted ahead of the one the
    caller waits for: the others run meanwhile and keep their results in their nodes' object
    stores, so the caller holds one result at a time and a long task list never fills the
    cluster's memory. On an error, or when the caller stops early, the tasks in flight are
    cancelled."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(fn)
    queue = iter(_put_shared(tasks))
    in_flight: list[Any] = []
    try:
        while True:
            while len(in_flight) < window and (task := next(queue, None)) is not None:
                in_flight.append(remote.remote(*task))
            if not in_flight:
                return
            yield ray.get(in_flight.pop(0))
    finally:
        for ref in in_flight:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)


def _put_shared(tasks: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The tasks with each argument that is the same object in every task (a config, the
    expert) put into the object store once, not pickled into each task."""
    import ray

    if len(tasks) < 2:
        return tasks
    same = [i for i in range(len(tasks[0])) if all(t[i] is tasks[0][i] for t in tasks)]
    refs = {i: ray.put(tasks[0][i]) for i in same}
    return [tuple(refs.get(i, a) for i, a in enumerate(t)) for t in tasks]


# ------------------------------------------------------------------ folders as bytes
def pack_folder(folder: Path, skip: Iterable[str] = ()) -> bytes:
    """The files under ``folder`` as an uncompressed tar in memory (names relative to it),
    without the top-level entries named in ``skip``."""
    skip = set(skip)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for entry in sorted(folder.iterdir()):
            if entry.name not in skip:
                tar.add(entry, arcname=entry.name)
    return buf.getvalue()


def unpack_folder(data: bytes, folder: Path) -> None:
    """Extract a :func:`pack_folder` tar into ``folder`` (created; files in it are replaced).
    Only plain files and folders inside ``folder`` are accepted."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(folder, filter="data")
