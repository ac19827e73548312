"""``train_rl.py --seeds … --executor ray``: each seed a Ray task on any node of a cluster.

Why plain Ray tasks and not Ray Tune: since Ray 2.7, Tune keeps trial checkpoints only in
storage that every node mounts (cloud storage or NFS) and no longer copies them to the head
node; rlkit's users often have machines without one. rlkit already keeps the bookkeeping
Tune would add (one run folder per seed, checkpoints, ``--resume``, the aggregate), so a task
per seed, with its files sent back to the driver through the object store, needs no shared
filesystem and keeps one code path for local and cluster runs.

What runs where. On a node, the task unpacks the inputs it was sent (the ``--init-from`` BC
export; the ``--demos`` dataset for SAC/TD3) into a temporary folder and runs the same child
as a local seed (``python -m rlkit.cli.train_rl --config …``, one CPU). On the driver, the
run folder ``OUT`` is the only copy that lasts:

- the child's output lines go to an inbox actor on the driver's node; the driver prints them
  (``seed S | …``) and appends them to ``OUT/logs/seed_S.log``;
- after each checkpoint the task sends the seed's whole folder, which replaces
  ``OUT/seed_S`` (so a killed driver's ``--resume`` continues from there), and the inbox
  keeps the newest one, from which a task rerun on another node (its node was lost)
  resumes;
- at the end the task returns the finished folder and the id of its node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rlkit.children import start_child
from rlkit.cluster import TASK_RETRIES, ClusterInfo, pack_folder, unpack_folder
from rlkit.config import run_config_files
from rlkit.rl.callbacks import newest_checkpoint
from rlkit.rl.config import RLConfig
from rlkit.rundir import LOCK_FILE, clean_stale_temps
from rlkit.tools import TOOLS
from rlkit.utils import replace_dir, temp_name, write_text_atomic

__all__ = ["run_seeds_on_ray"]

#: A seed task's temporary folder on its node is ``.rlkit_seed.tmp-<worker pid>_<random>``,
#: rlkit's temporary-name form: a folder whose worker was killed is removed by the next task.
TMP_NAME = "rlkit_seed"
#: Seconds between the task's reports (output lines, a new checkpoint) to the driver.
REPORT_EVERY = 1.0


class _Inbox:
    """Ray actor on the driver's node: output lines and folders posted by the seed tasks,
    and the newest folder of each seed (where a rerun task resumes)."""

    def __init__(self, folders: dict[int, bytes]) -> None:
        self.messages: list[tuple[int, list[str], bytes | None]] = []
        self.folders = dict(folders)

    def post(self, seed: int, lines: list[str], folder: bytes | None = None) -> None:
        self.messages.append((seed, lines, folder))
        if folder is not None:
            self.folders[seed] = folder

    def take(self) -> list[tuple[int, list[str], bytes | None]]:
        messages, self.messages = self.messages, []
        return messages

    def folder(self, seed: int) -> bytes | None:
        return self.folders.get(seed)


def _seed_task(cfg: RLConfig, seed: int, inputs: dict[str, bytes], inbox: Any) -> dict[str, Any]:
    """Run one seed on this node (see the module docstring); its exit code, node and folder."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    clean_stale_temps(Path(tempfile.gettempdir()), prefix=TMP_NAME, recursive=False)
    with tempfile.TemporaryDirectory(prefix=f".{TMP_NAME}.tmp-{os.getpid()}_") as tmp:
        root = Path(tmp)
        local: dict[str, str | None] = {"init_from": None, "demos": None}
        for name, data in inputs.items():
            unpack_folder(data, root / "inputs" / name)
            local[name] = str(root / "inputs" / name)
        run = root / "run"
        previous = ray.get(inbox.folder.remote(seed))
        if previous is not None:
            unpack_folder(previous, run)
        one = dataclasses.replace(cfg, output=str(run), **local)
        config_file = root / "seed.yml"
        config_file.write_text(run_config_files(one, section="rl")["config.resolved.yml"])
        cmd = [sys.executable, "-m", TOOLS["rl"].module, "--config", str(config_file)]
        if previous is not None:
            cmd.append("--resume")
        note = f"$ {' '.join(cmd)}  (on Ray node {node})"
        code = _run_reporting(cmd, run, seed, inbox, note)
        folder = pack_folder(run, skip=[LOCK_FILE]) if run.is_dir() else None
        return {"code": code, "node": node, "folder": folder}


def _run_reporting(cmd: list[str], run: Path, seed: int, inbox: Any, note: str) -> int:
    """Run the child; post its output lines, and its folder after each new checkpoint."""
    import ray

    child = start_child(cmd, subprocess.PIPE)
    lines: list[str] = [note]
    lock = threading.Lock()

    def read() -> None:
        assert child.stdout is not None
        for raw in child.stdout:
            with lock:
                lines.append(raw.decode(errors="replace").rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent_checkpoint = newest_checkpoint(run)
    try:
        while True:
            finished = child.poll() is not None
            if finished:
                reader.join()
            with lock:
                batch, lines[:] = list(lines), []
            ckpt = newest_checkpoint(run)
            folder = None
            if ckpt is not None and ckpt != sent_checkpoint and not finished:
                folder, sent_checkpoint = pack_folder(run, skip=[LOCK_FILE]), ckpt
            if batch or folder is not None:
                ray.get(inbox.post.remote(seed, batch, folder))
            if finished:
                return int(child.returncode)
            time.sleep(REPORT_EVERY)
    finally:
        if child.poll() is None:  # this task was cancelled: do not leave the run behind
            child.kill()
            child.wait()


def run_seeds_on_ray(
    cfg: RLConfig, out: Path, seed_config: Any, cluster: ClusterInfo
) -> tuple[dict[int, int], dict[int, str]]:
    """Run every seed of ``cfg.seeds`` as a Ray task; their exit codes and node ids.

    ``seed_config(seed)`` is the seed's options as a local run (output ``OUT/seed_<s>``);
    ``OUT/logs/seed_<s>.yml`` records them. A seed whose task fails (retries spent) gets exit
    code -1 and the error in its log.
    """
    import ray
    from ray.exceptions import RayError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    assert cfg.seeds is not None
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    inputs = _inputs(cfg)
    folders = {}
    for seed in cfg.seeds:
        folder = out / f"seed_{seed}"
        if folder.is_dir() and any(folder.iterdir()):
            folders[seed] = pack_folder(folder, skip=[LOCK_FILE])
    here = ray.get_runtime_context().get_node_id()
    inbox = (
        ray.remote(_Inbox)
        .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
        .remote(folders)
    )
    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_seed_task)
    refs = {}
    for seed in cfg.seeds:
        one = seed_config(seed)
        write_text_atomic(
            logs / f"seed_{seed}.yml", run_config_files(one, section="rl")["config.resolved.yml"]
        )
        refs[task.remote(dataclasses.replace(one, output=""), seed, inputs, inbox)] = seed
    codes: dict[int, int] = {}
    nodes: dict[int, str] = {}
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            for seed, batch, folder in ray.get(inbox.take.remote()):
                _log(logs, seed, batch)
                if folder is not None:
                    _replace_folder(out / f"seed_{seed}", folder)
            for ref in ready:
                seed = refs.pop(ref)
                try:
                    res = ray.get(ref)
                except RayError as e:
                    _log(logs, seed, [f"the Ray task of seed {seed} failed: {e}"])
                    codes[seed] = -1
                    continue
                if res["folder"] is not None:  # None: the run failed before it wrote any
                    _replace_folder(out / f"seed_{seed}", res["folder"])
                codes[seed], nodes[seed] = res["code"], res["node"]
    finally:
        for ref in refs:  # Ctrl-C or an error: stop the others (their checkpoints are here)
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        with contextlib.suppress(Exception):
            ray.kill(inbox)
    return codes, nodes


def _inputs(cfg: RLConfig) -> dict[str, bytes]:
    """The input folders a seed's run reads, packed once for every task."""
    inputs = {}
    if cfg.init_from:
        inputs["init_from"] = pack_folder(Path(cfg.init_from))
    if cfg.demos and cfg.algo != "ppo":  # PPO does not read the demonstrations
        inputs["demos"] = pack_folder(Path(cfg.demos))
    return inputs


def _log(logs: Path, seed: int, lines: list[str]) -> None:
    with (logs / f"seed_{seed}.log").open("a") as f:
        for line in lines:
            f.write(line + "\n")
    for line in lines:
        text = line.split("\r")[-1]
        if text.strip():
            print(f"seed {seed} | {text}", flush=True)


def _replace_folder(folder: Path, data: bytes) -> None:
    """Put a seed's folder in place as a whole: unpacked beside it, then swapped in."""
    tmp = temp_name(folder)
    try:
        unpack_folder(data, tmp)
        replace_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
