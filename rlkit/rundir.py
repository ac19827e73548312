"""One run-folder lifecycle for every tool: new / resume / overwrite / refuse, and a lock.

Every trainer (BC, RL, world model) and the pipeline open their output folder through
:class:`RunDir`; the dataset writers (collection, merge, DAgger) check a folder they are
about to replace with :func:`check_replaceable`. The rules, the same for every tool::

    folder missing, or holds no run      -> a new run (after every input was validated)
    holds a run, --resume                -> continue from its newest checkpoint; a run that
                                            finished with the same settings is left as it is
                                            ("nothing to do"), one without a checkpoint
                                            starts over
    holds a run, --overwrite             -> rlkit's own outputs of that tool are removed and
                                            the run starts over; anything else in the folder
                                            (a notes.txt, another tool's files) refuses it
    holds a run, neither flag            -> refused, naming both flags
    another process holds the folder     -> refused, naming that process's pid

"Holds no run" means nothing but ``config.resolved.yml``, ``command.txt``, the lock and
temporary files: a start that failed before its first checkpoint leaves no run behind.

The lock is ``flock`` on ``.rlkit.lock`` in the folder: the kernel drops it when its process
dies (even SIGKILL), so a stale lock never blocks a resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from rlkit.tools import TOOLS
from rlkit.utils import RESULT_FILE, json_ready, write_json_atomic

__all__ = [
    "RunDir",
    "RunInUseError",
    "RunLock",
    "check_replaceable",
    "clean_stale_temps",
    "interrupt_message",
    "say",
]

LOCK_FILE = ".rlkit.lock"
RUN_CONFIG_FILES = ("config.resolved.yml", "command.txt")

#: Temporary names rlkit writes (``utils.temp_name``, the dataset writers' folders).
_TEMP_RE = re.compile(r"^\..*\.(tmp|old)-(\d+)(\D.*)?$")

_COMMON = [*RUN_CONFIG_FILES, RESULT_FILE, LOCK_FILE]

#: Top-level names each kind of output folder may hold: what rlkit writes there.
OUTPUTS: dict[str, list[str]] = {
    "bc": [
        "bc_policy.pt", "policy_*.zip", "bc_export.json", "checkpoint.pt", "train_log.csv",
        "eval.json", "dagger",
    ],
    "rl": [
        "checkpoints", "learning_curve.csv", "learning_curve.png", "final_model.zip",
        "best_model.zip", "eval.json", "tb", "tensorboard", "*.gif", "*.mp4",
    ],
    "rl_seeds": [
        "seed_*", "logs", "aggregate.json", "aggregate.md", "learning_curves.png", "*.gif",
        "*.mp4",
    ],
    "world_model": ["checkpoints", "metrics.csv", "openloop_*.png", "tb", "discarded_episodes"],
    "dataset": ["meta", "data", "videos", "images", "README.md"],
    "pipeline": [
        "demos", "bc", "rl", "world_model", "world_model_episodes", "logs", "pipeline.json",
        "summary.json", "summary.md", "learning_curve.png", "learning_curves.png", "lap.gif",
    ],
}  # fmt: skip

#: What each kind is called in messages: the tool's script, or what it writes.
NAMES: dict[str, str] = {
    **{section: tool.script for section, tool in TOOLS.items()},
    "rl_seeds": "train_rl.py --seeds",
    "dataset": "LeRobot dataset",
    "pipeline": "train_optimized.sh",
}

#: Options that steer how a run is started, not what it computes.
_CONTROL_KEYS = frozenset({"resume", "overwrite"})


class RunInUseError(OSError):
    """Another live process is writing the folder."""


def say(text: str) -> None:
    """A line the user must see (resumed, nothing to do, ...): printed, not logged."""
    print(text, file=sys.stderr, flush=True)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _is_temp(name: str) -> bool:
    return _TEMP_RE.match(name) is not None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temps(folder: Path, prefix: str = "", recursive: bool = True) -> list[Path]:
    """Remove temporary files/folders rlkit left in ``folder`` when a process was killed.

    Only names of rlkit's temporary form (``.NAME.tmp-PID...``, ``.NAME.old-PID``) whose
    process is gone are removed; ``prefix`` narrows them to ``.<prefix>.``. Returns them.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TEMP_RE.match(entry.name)
        if m is not None and entry.name.startswith(f".{prefix}"):
            pid = int(m.group(2))
            if pid != os.getpid() and not _pid_alive(pid):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
        elif recursive and entry.is_dir() and not entry.is_symlink():
            removed += clean_stale_temps(entry, prefix, recursive)
    return removed


def _matches(name: str, kind: str) -> bool:
    return _is_temp(name) or any(fnmatch.fnmatchcase(name, p) for p in _COMMON + OUTPUTS[kind])


def foreign_entries(folder: Path, kind: str) -> list[str]:
    """Top-level entries of ``folder`` that a ``kind`` tool does not write."""
    names = (e.name + ("/" if e.is_dir() else "") for e in folder.iterdir())
    return sorted(n for n in names if not _matches(n.rstrip("/"), kind))


def _file_or_link(path: Path) -> str:
    return "a link" if path.is_symlink() else "a file"


def check_replaceable(path: Path, kind: str, flag: str = "--output") -> None:
    """Refuse to replace ``path`` unless it is missing or holds only ``kind``'s own outputs.

    Raises:
        FileExistsError: ``path`` is a file, or a folder holding anything else.
    """
    what = NAMES[kind]
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FileExistsError(
            f"{path} is {_file_or_link(path)}, not a {what} folder; --overwrite replaces only "
            f"rlkit's own outputs: choose another {flag}"
        )
    if not path.exists():
        return
    foreign = foreign_entries(path, kind)
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise FileExistsError(
            f"{path} holds files that are not {what} output ({shown}); --overwrite replaces "
            f"only rlkit's own outputs: move them away or choose another {flag}"
        )


class RunLock:
    """An exclusive ``flock`` on ``folder/.rlkit.lock``, holding this process's pid."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunInUseError(
                f"{self.path.parent} is in use by {holder}; wait for it to finish or stop it, "
                "or choose another output folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({Path(sys.argv[0]).name})\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_ACTIVE: list[RunDir] = []
_INTERRUPTED: list[RunDir] = []  # the run a KeyboardInterrupt left, for run_tool's line


def interrupt_message() -> str:
    """What an interrupted tool prints: what was saved, and the command that resumes."""
    runs = _ACTIVE or _INTERRUPTED
    if not runs:
        return "interrupted; nothing was written"
    run = runs[-1]
    if not run.holds_run():
        return f"interrupted before anything was saved in {run.path}"
    saved = run.saved_now() or "nothing saved yet"
    return f"interrupted; {saved} in {run.path}. Resume with: {run.resume_command}"


class RunDir:
    """A tool's output folder, opened for writing by one process at a time.

    Example (a trainer)::

        run = RunDir(cfg.output, "bc", resume=cfg.resume, overwrite=cfg.overwrite,
                     has_checkpoint=lambda p: (p / "checkpoint.pt").is_file())
        with run:
            done = run.start(cfg, section="bc", argv=argv)
            if done is not None:   # finished earlier with these settings
                return done
            ...                    # train; run.saved = "checkpoint at epoch 3"
            run.finish(result, summary_text(result))

    Args:
        path: The folder.
        kind: Key of :data:`OUTPUTS` (``"bc"``, ``"rl"``, ``"world_model"``, ``"pipeline"``).
        resume: Continue the run there (``--resume``).
        overwrite: Replace the run there (``--overwrite``).
        has_checkpoint: Whether the folder holds state a resume can continue from.
        resume_flag: The flag that resumes (``None``: the tool resumes by default).
    """

    def __init__(
        self,
        path: str | Path,
        kind: str,
        *,
        resume: bool,
        overwrite: bool = False,
        has_checkpoint: Callable[[Path], bool],
        resume_flag: str | None = "--resume",
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.resume, self.overwrite = resume, overwrite
        self.has_checkpoint = has_checkpoint
        self.resume_flag = resume_flag
        self.resuming = False  # set by start(): state will be loaded from a checkpoint
        self.saved: str | None = None  # what a kill now would keep, for the interrupt message
        self._pending: tuple[str, Path, int | None] | None = None  # see saving()
        self.resume_command = ""
        self._lock = RunLock(self.path)
        self._created = self._lock_created = self._started = False

    # -- context
    def __enter__(self) -> RunDir:
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            raise FileExistsError(
                f"{self.path} is {_file_or_link(self.path)}, not a {NAMES[self.kind]} run "
                "folder; choose another output folder"
            )
        self._created = not self.path.exists()
        self._lock_created = not (self.path / LOCK_FILE).exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(
                f"cannot create the output folder {self.path} ({e.strerror or e}); choose "
                "another one"
            ) from e
        self._lock.acquire()
        _ACTIVE.append(self)
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        _ACTIVE.remove(self)
        if exc_type is KeyboardInterrupt:
            _INTERRUPTED[:] = [self]
        self._lock.release()
        if exc_type is None:
            return
        if self._started and not self.holds_run():
            # a start that failed before writing anything a resume could use is not a run
            for name in RUN_CONFIG_FILES:
                (self.path / name).unlink(missing_ok=True)
        if self._lock_created:
            (self.path / LOCK_FILE).unlink(missing_ok=True)
        if self._created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty

    # -- state
    def holds_run(self) -> bool:
        """Whether the folder holds anything besides the run's config files, lock and temps."""
        quiet = {*RUN_CONFIG_FILES, LOCK_FILE}
        return any(e.name not in quiet and not _is_temp(e.name) for e in self.path.iterdir())

    @contextlib.contextmanager
    def saving(self, what: str, path: Path) -> Iterator[None]:
        """Around the atomic write of ``path``: ``what`` (``"checkpoint at epoch 3"``) becomes
        :attr:`saved` once the new file is in place, also for a Ctrl-C that lands between
        the rename and the end of the block."""
        self._pending = (what, path, _inode(path))
        yield
        self.saved, self._pending = what, None

    def saved_now(self) -> str | None:
        """:attr:`saved`, counting a :meth:`saving` whose new file is already in place."""
        if self._pending is not None:
            what, path, before = self._pending
            if _inode(path) not in (None, before):  # replaced: a new file, a new inode
                self.saved, self._pending = what, None
        return self.saved

    def saved_result(self, cfg: Any, section: str) -> dict[str, Any] | None:
        """``result.json`` of a complete run made with the same settings as ``cfg``."""
        from rlkit.config import config_to_dict

        try:
            result = json.loads((self.path / RESULT_FILE).read_text())
            saved = yaml.safe_load((self.path / "config.resolved.yml").read_text())[section]
        except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
            return None
        if not isinstance(result, dict) or not result.get("complete"):
            return None
        now = config_to_dict(cfg)
        same = {k: v for k, v in saved.items() if k not in _CONTROL_KEYS} == {
            k: v for k, v in now.items() if k not in _CONTROL_KEYS
        }
        return result if same else None

    def start(
        self, cfg: Any, *, section: str, argv: list[str] | None = None, record: bool = True
    ) -> dict[str, Any] | None:
        """Decide new / resume / overwrite / refuse, then record the run's config
        (``record=False``: the caller calls :meth:`record_config` once it has checked that
        the checkpoint fits the config, so a refused resume keeps the folder's own).

        Returns:
            The saved ``result.json`` when ``--resume`` finds the run already finished with
            these settings (nothing to do: the caller returns it), else ``None``.

        Raises:
            FileExistsError: The folder holds a run (or other files) and neither flag allows
                replacing or continuing it.
        """
        from rlkit.config import command_line

        args = list(sys.argv[1:] if argv is None else argv)
        if self.resume_flag and self.resume_flag not in args:
            args = [a for a in args if a not in ("--overwrite",)] + [self.resume_flag]
        self.resume_command = command_line(args)
        tool = NAMES[self.kind]
        for p in clean_stale_temps(self.path):
            say(f"removed {p}, left by a killed process")
        holds = self.holds_run()
        if holds and self.resume:
            foreign = foreign_entries(self.path, self.kind)
            if foreign:
                raise FileExistsError(
                    f"{self.path} holds files that are not {tool} output ({', '.join(foreign)}); "
                    "choose another output folder"
                )
            done = self.saved_result(cfg, section)
            if done is not None:
                say(f"{self.path}: this run is finished (result.json); nothing to do")
                return done
            (self.path / RESULT_FILE).unlink(missing_ok=True)  # stale once the run goes on
            self.resuming = self.has_checkpoint(self.path)
            if not self.resuming:
                say(f"{self.path}: no checkpoint to resume from; starting the run over")
                self._clear()
        elif holds and self.overwrite:
            check_replaceable(self.path, self.kind)
            self._clear()
        elif holds:
            foreign = foreign_entries(self.path, self.kind)
            if foreign:
                raise FileExistsError(
                    f"{self.path} holds files that are not {tool} output "
                    f"({', '.join(foreign[:5])}); choose another output folder"
                )
            if self.resume_flag is None:  # the tool resumes by default: --no-resume was given
                hint = "drop --no-resume to continue it"
            else:
                hint = f"pass {self.resume_flag} to continue it, --overwrite to replace it"
            raise FileExistsError(
                f"{self.path} holds a {tool} run; {hint}, or choose another output folder"
            )
        elif self.resume and self.resume_flag and self._created:
            raise FileNotFoundError(
                f"{self.resume_flag}: {self.path} does not exist; start a new run without "
                f"{self.resume_flag}"
            )
        elif self.resume and self.resume_flag:
            say(f"{self.path}: no run to resume there; starting a new one")
        self._started = True
        if record:
            self.record_config(cfg, section=section, argv=argv)
        return None

    def record_config(self, cfg: Any, *, section: str, argv: list[str] | None = None) -> None:
        """Write ``config.resolved.yml`` and ``command.txt`` of this run."""
        from rlkit.config import save_run_config

        save_run_config(cfg, self.path, section=section, argv=argv)

    def _clear(self) -> None:
        """Remove this tool's own outputs (the caller checked there is nothing else)."""
        for entry in self.path.iterdir():
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def finish(self, result: Any, summary: str, *, complete: bool = True) -> None:
        """Write ``result.json`` last: the run's figures, its printed summary, and whether it
        is complete (a run stopped by a time budget is not: a resume continues it)."""
        payload = json_ready(result)
        payload.update(complete=complete, summary=summary)
        write_json_atomic(self.path / RESULT_FILE, payload)
