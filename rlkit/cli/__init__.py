"""Command-line entry points: one module per root script, each ``main(argv) -> exit code``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


def run_tool(prog: str, work: Callable[[], str], errors: tuple[type[Exception], ...]) -> int:
    """Run a tool's work and print its summary; expected failures print one clear line.

    Returns the exit code: 0, 1 for an error of a type in ``errors`` (bad input files,
    existing outputs, failed workers), or 130 after Ctrl-C. Configuration errors never get
    here: ``cli_main`` exits with code 2 before any work starts.
    """
    from rlkit.rundir import interrupt_message

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        text = work()
    except errors as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C: one line (what was kept, how to go on), no traceback; 130 = 128 + SIGINT
        print(f"\n{prog}: {interrupt_message()}", file=sys.stderr)
        return 130
    print(text)
    return 0
