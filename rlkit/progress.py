"""Progress of long work, readable on a terminal *and* in a log file.

On a terminal, :func:`progress` returns the usual tqdm bar. When stderr is not a terminal
(the pipeline pipes every tool into ``RUN/logs/<stage>.log``; ``tool > log 2>&1``; CI), a
tqdm bar is a stream of carriage returns that shows nothing readable until the stage ends,
so :func:`progress` returns a :class:`LineProgress` instead: the same small subset of the
tqdm API, printing one plain line to stdout (flushed) at most every
``RLKIT_PROGRESS_SECONDS`` seconds, and a last line when it is closed::

    rl: 120,000/500,000 step (24.0%), 3,105 step/s, val_return=512.3, ETA 2m03s

Environment:
    ``RLKIT_PROGRESS_SECONDS``: seconds between two lines in line mode (a number > 0, floats
    allowed; default 10). Any other value raises :class:`ValueError` when a bar is created.

Lines are printed when the work reports progress (``update``): a unit of work that takes
longer than the interval (one long epoch) prints its line when it ends.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, cast

ENV_SECONDS = "RLKIT_PROGRESS_SECONDS"
DEFAULT_SECONDS = 10.0

# the clock of LineProgress (a module attribute so tests can replace it)
_clock = time.monotonic


class Progress(Protocol):
    """What the tools use of a progress bar (tqdm has it; so has :class:`LineProgress`)."""

    n: float
    total: float | None
    initial: float

    def update(self, n: float = 1) -> Any: ...

    def set_postfix(
        self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Progress: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...


def progress_seconds() -> float:
    """The line interval from ``RLKIT_PROGRESS_SECONDS`` (default 10 s).

    Raises:
        ValueError: the variable is set but is not a number > 0.
    """
    raw = os.environ.get(ENV_SECONDS, "").strip()
    if not raw:
        return DEFAULT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError(
            f"{ENV_SECONDS} must be a number of seconds > 0 (e.g. 10 or 0.5), got {raw!r}; "
            f"fix or unset it"
        )
    return seconds


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # no isatty / closed stream
        return False


def progress(
    total: int,
    desc: str,
    unit: str,
    *,
    initial: int = 0,
    enabled: bool = True,
    unit_scale: bool = False,
) -> Progress:
    """A progress bar of ``total`` units: tqdm on a terminal, :class:`LineProgress` otherwise.

    Args:
        total: units of the whole work (``initial`` included).
        desc: what is counted ("collect", "bc", "rl"); starts every line.
        unit: the unit's name ("ep", "epoch", "step").
        initial: units already done before this process started (a resumed run); they count
            towards ``n`` and the percentage, not towards the rate.
        enabled: False shows nothing.
        unit_scale: tqdm's ``unit_scale`` (1.2M instead of 1,200,000) on a terminal.

    Raises:
        ValueError: ``RLKIT_PROGRESS_SECONDS`` is not a number > 0.
    """
    seconds = progress_seconds()  # checked in both modes: a typo fails the same everywhere
    if _stderr_is_tty():
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            disable=not enabled,
            dynamic_ncols=True,
            unit_scale=unit_scale,
        )
        if not hasattr(bar, "initial"):  # a disabled tqdm returns before setting it
            bar.initial = initial
        return cast(Progress, bar)
    return LineProgress(total, desc, unit, initial=initial, enabled=enabled, seconds=seconds)


def _fmt_count(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"


def format_duration(seconds: float) -> str:
    """``45s``, ``2m03s``, ``1h02m03s``."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _fmt_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class LineProgress:
    """tqdm's ``update`` / ``n`` / ``set_postfix`` / ``close`` as plain lines on stdout.

    A line is printed by ``update`` once ``seconds`` have passed since the last one (or since
    the bar was created) and progress was made since then, and by ``close`` when progress was
    made since the last line. The rate counts the units done since the bar was created
    (``initial`` excluded); the ETA follows from it.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        *,
        initial: int = 0,
        enabled: bool = True,
        seconds: float = DEFAULT_SECONDS,
    ) -> None:
        if seconds <= 0 or math.isnan(seconds):
            raise ValueError(f"seconds must be > 0, got {seconds}")
        self.total, self.desc, self.unit = total, desc, unit
        self.initial: float = initial
        self.n: float = initial
        self.enabled, self.seconds = enabled, seconds
        self.postfix = ""
        self.closed = False
        self._t0 = self._last_t = _clock()
        self._last_n: float = initial

    # -- the tqdm subset
    def update(self, n: float = 1) -> None:
        self.n += n
        if self.closed or not self.enabled:
            return
        now = _clock()
        if now - self._last_t >= self.seconds and self.n != self._last_n:
            self._emit(now, final=False)

    def set_postfix(
        self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={_fmt_value(v)}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.enabled and self.n != self._last_n:
            self._emit(_clock(), final=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the line
    def line(self, now: float | None = None, final: bool = False) -> str:
        """The progress line at ``now`` (default: the clock). It ends with the ETA, or with the
        time taken once the total is reached or when ``final``."""
        now = _clock() if now is None else now
        elapsed = now - self._t0
        parts = [f"{self.desc}: {_fmt_count(self.n)}"]
        if self.total:
            parts[0] += f"/{_fmt_count(self.total)} {self.unit} ({100 * self.n / self.total:.1f}%)"
        else:
            parts[0] += f" {self.unit}"
        done = self.n - self.initial
        rate = done / elapsed if done > 0 and elapsed > 0 else None
        if rate is not None:
            if rate >= 1:
                parts.append(f"{rate:,.{0 if rate >= 100 else 1}f} {self.unit}/s")
            else:
                parts.append(f"{1 / rate:,.1f} s/{self.unit}")
        if self.postfix:
            parts.append(self.postfix)
        left = self.total - self.n if self.total else None
        if final or (left is not None and left <= 0):
            parts.append(f"{format_duration(elapsed)} elapsed")
        elif rate is not None and left is not None:
            parts.append(f"ETA {format_duration(left / rate)}")
        return ", ".join(parts)

    def _emit(self, now: float, final: bool) -> None:
        print(self.line(now, final), flush=True)
        self._last_t, self._last_n = now, self.n
