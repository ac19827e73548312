"""Stage processes (:mod:`rlkit.children`): logged, and each signal passed on once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rlkit.children import PassSignals, start_child
from rlkit.pipeline.stages import PROG

__all__ = ["run_logged"]


def run_logged(cmd: list[str], log: Path, stage: str) -> tuple[int, int | None]:
    """Run ``cmd`` with its output shown and saved to ``log``.

    Returns:
        The exit code and the first signal the pipeline received meanwhile (None: none).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    # unbuffered: a killed pipeline must not lose the tail of the log
    with (
        open(log, "ab", buffering=0) as f,
        PassSignals(f"{PROG}: stopping stage '{stage}' (Ctrl-C again kills it)") as signals,
    ):
        f.write(f"$ {' '.join(cmd)}\n".encode())
        proc = start_child(cmd, subprocess.PIPE)
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
