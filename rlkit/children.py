"""Child processes that die with their parent: the pipeline's stages and the seeds of
``train_rl.py --seeds``.

A child runs in its own process group, so the terminal's Ctrl-C reaches the parent only,
which passes it on exactly once (a second SIGINT would hit the child while it saves); and the
kernel sends it SIGKILL when the parent dies, whatever killed the parent (Linux:
``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from typing import IO, Any

__all__ = ["PassSignals", "start_child"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _libc_prctl() -> Any:
    """libc's ``prctl`` on Linux (looked up before the fork), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _child_setup(parent: int, prctl: Any) -> None:
    """Runs in the child between fork and exec: its own group, and death with ``parent``."""
    os.setpgid(0, 0)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)


def start_child(cmd: list[str], stdout: int | IO[Any]) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, dying with this process; stdin is closed
    (the group may not read the terminal) and stderr goes with stdout. Its pid is its
    process group id."""
    prctl, parent = _libc_prctl(), os.getpid()
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: _child_setup(parent, prctl),
    )


class PassSignals:
    """While children run: pass SIGINT/SIGTERM/SIGHUP on to their process groups, once each.

    The first Ctrl-C prints ``notice``; the second kills the groups (a child that does not
    stop must not hold the user). Ctrl-Z stops the children with the parent and ``fg``
    continues them all. A signal that arrives while a child is starting reaches it once it
    has started (:meth:`started`).
    """

    PASSED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, notice: str) -> None:
        self.notice = notice
        self.pgids: list[int] = []  # the children's process groups (= their pids)
        self.received: list[int] = []
        self._old: dict[int, Any] = {}

    def _send(self, sig: int, pgids: list[int] | None = None) -> None:
        for pgid in self.pgids if pgids is None else pgids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if signum == signal.SIGINT and self.received.count(signal.SIGINT) == 1:
            print(f"\n{self.notice}", file=sys.stderr, flush=True)
        elif signum == signal.SIGINT:
            self._send(signal.SIGKILL)
            return
        self._send(signum)

    def _on_stop(self, signum: int, frame: object) -> None:
        self._send(signal.SIGTSTP)
        os.kill(os.getpid(), signal.SIGSTOP)  # stops here until SIGCONT (fg)
        self._send(signal.SIGCONT)

    def started(self, pid: int) -> None:
        self.pgids.append(pid)
        for sig in dict.fromkeys(self.received):  # arrived before this child started
            self._send(sig, [pid])

    def finished(self, pid: int) -> None:
        """Forget a child that has exited (its group id may be reused)."""
        self.pgids.remove(pid)

    def __enter__(self) -> PassSignals:
        for sig in self.PASSED:
            self._old[sig] = signal.signal(sig, self._on_signal)
        self._old[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._on_stop)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
