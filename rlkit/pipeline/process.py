"""Stage processes: they die with the pipeline and see each signal once."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from rlkit.pipeline.stages import PROG

__all__ = ["run_logged"]

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
    """Runs in the stage's process between fork and exec.

    Its own process group: the terminal's Ctrl-C reaches the pipeline only, which passes it
    on exactly once (a second SIGINT would hit the stage while it saves). And the kernel
    sends it SIGKILL when the pipeline dies, whatever killed the pipeline.
    """
    os.setpgid(0, 0)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the pipeline died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)


class _StageSignals:
    """While a stage runs: pass SIGINT/SIGTERM/SIGHUP on to its process group, once each.

    The second Ctrl-C kills the group (a stage that does not stop must not hold the user);
    Ctrl-Z stops the stage's group with the pipeline and ``fg`` continues both.
    """

    PASSED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.pgid: int | None = None  # the stage's process group (= its pid) once started
        self.received: list[int] = []
        self._old: dict[int, Any] = {}

    def _send(self, sig: int) -> None:
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if signum == signal.SIGINT and self.received.count(signal.SIGINT) == 1:
            print(f"\n{PROG}: stopping stage '{self.stage}' (Ctrl-C again kills it)",
                  file=sys.stderr, flush=True)  # fmt: skip
        elif signum == signal.SIGINT:
            self._send(signal.SIGKILL)
            return
        self._send(signum)

    def _on_stop(self, signum: int, frame: object) -> None:
        self._send(signal.SIGTSTP)
        os.kill(os.getpid(), signal.SIGSTOP)  # stops here until SIGCONT (fg)
        self._send(signal.SIGCONT)

    def started(self, pid: int) -> None:
        self.pgid = pid
        for sig in dict.fromkeys(self.received):  # arrived while the stage was starting
            self._send(sig)

    def __enter__(self) -> _StageSignals:
        for sig in self.PASSED:
            self._old[sig] = signal.signal(sig, self._on_signal)
        self._old[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._on_stop)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def run_logged(cmd: list[str], log: Path, stage: str) -> tuple[int, int | None]:
    """Run ``cmd`` with its output shown and saved to ``log``.

    Returns:
        The exit code and the first signal the pipeline received meanwhile (None: none).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    prctl, parent = _libc_prctl(), os.getpid()
    # unbuffered: a killed pipeline must not lose the tail of the log
    with open(log, "ab", buffering=0) as f, _StageSignals(stage) as signals:
        f.write(f"$ {' '.join(cmd)}\n".encode())
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,  # its own process group may not read the terminal
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _child_setup(parent, prctl),
        )
        signals.started(proc.pid)
        assert proc.stdout is not None
        echo = True
        # until every writer is gone: the stage and anything it started that kept its stdout
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
            if echo:
                try:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                except OSError:  # the terminal went away (SIGHUP): keep logging
                    echo = False
            f.write(chunk)
        code = proc.wait()
    return code, (signals.received[0] if signals.received else None)
