"""rlkit.progress: tqdm on a terminal, plain timed lines in a pipe or a log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

import rlkit.progress as progress_mod
from rlkit.progress import ENV_SECONDS, LineProgress, progress, progress_seconds

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Line mode (whatever pytest's stderr is) on a clock the test moves by hand."""
    fake = FakeClock()
    monkeypatch.setattr(progress_mod, "_clock", fake)
    monkeypatch.setattr(progress_mod, "_stderr_is_tty", lambda: False)
    monkeypatch.delenv(ENV_SECONDS, raising=False)
    return fake


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_line_has_count_percent_rate_postfix_and_eta(clock, capsys) -> None:
    bar = progress(500_000, "rl", "step", initial=100_000)
    assert isinstance(bar, LineProgress)
    assert (bar.n, bar.initial, bar.total) == (100_000, 100_000, 500_000)
    bar.set_postfix(val_return=512.3)
    clock.t += 10
    bar.update(20_000)  # 20,000 steps in 10 s (the resumed 100,000 do not count)
    # 380,000 left at 2,000 step/s: 190 s
    assert lines(capsys) == [
        "rl: 120,000/500,000 step (24.0%), 2,000 step/s, val_return=512.3, ETA 3m10s"
    ]
    assert bar.n == 120_000
    bar.set_postfix_str("loss=0.5")
    clock.t += 30
    bar.update(60_000)
    clock.t += 1
    bar.close()  # nothing done since that line: no other
    assert lines(capsys) == [
        "rl: 180,000/500,000 step (36.0%), 2,000 step/s, loss=0.5, ETA 2m40s",
    ]
    bar.close()  # twice is fine, and silent
    assert lines(capsys) == []


def test_slow_units_and_completion(clock, capsys) -> None:
    with progress(10, "bc", "epoch") as bar:
        bar.set_postfix(train="0.0123", val="0.0456")
        clock.t += 25
        bar.update(1)  # 25 s per epoch, 9 left
        clock.t += 3700 - 25
        bar.update(9)
    assert lines(capsys) == [
        "bc: 1/10 epoch (10.0%), 25.0 s/epoch, train=0.0123, val=0.0456, ETA 3m45s",
        "bc: 10/10 epoch (100.0%), 370.0 s/epoch, train=0.0123, val=0.0456, 1h01m40s elapsed",
    ]


def test_no_rate_or_eta_before_progress(clock) -> None:
    bar = progress(100, "merge", "frame", initial=40)
    clock.t += 5
    assert bar.line() == "merge: 40/100 frame (40.0%)"


def test_interval_is_respected_and_close_prints_the_rest(clock, capsys, monkeypatch) -> None:
    monkeypatch.setenv(ENV_SECONDS, "10")
    bar = progress(100, "collect", "ep")
    for _ in range(25):  # one episode a second
        clock.t += 1
        bar.update(1)
    out = lines(capsys)
    assert [line.split(",")[0] for line in out] == [
        "collect: 10/100 ep (10.0%)",
        "collect: 20/100 ep (20.0%)",
    ]
    bar.close()  # 5 more since the last line
    final = lines(capsys)
    assert len(final) == 1 and final[0].startswith("collect: 25/100 ep (25.0%), ")
    assert final[0].endswith("25s elapsed")
    # no progress since the last line: no line however long it has been, none at close
    bar = progress(100, "collect", "ep")
    clock.t += 10
    bar.update(1)
    assert len(lines(capsys)) == 1
    clock.t += 100
    bar.update(0)
    bar.close()
    assert lines(capsys) == []


def test_long_interval_prints_only_the_final_line(capsys, monkeypatch) -> None:
    monkeypatch.setattr(progress_mod, "_stderr_is_tty", lambda: False)
    monkeypatch.setenv(ENV_SECONDS, "3600")
    with progress(1000, "rl", "step") as bar:
        for _ in range(1000):
            bar.update(1)
        assert lines(capsys) == []
    out = lines(capsys)
    assert len(out) == 1
    assert re.fullmatch(r"rl: 1,000/1,000 step \(100\.0%\), [\d,.]+ step/s, \d+s elapsed", out[0])


def test_a_short_interval_prints_every_update(capsys, monkeypatch) -> None:
    monkeypatch.setattr(progress_mod, "_stderr_is_tty", lambda: False)
    monkeypatch.setenv(ENV_SECONDS, "0.001")
    bar = progress(3, "seed episodes", "ep")
    for _ in range(3):
        start = progress_mod._clock()
        while progress_mod._clock() - start < 0.002:  # wait out the interval
            pass
        bar.update(1)
    bar.close()
    out = lines(capsys)
    assert [line.split(",")[0] for line in out] == [
        "seed episodes: 1/3 ep (33.3%)",
        "seed episodes: 2/3 ep (66.7%)",
        "seed episodes: 3/3 ep (100.0%)",
    ]
    assert "ETA" in out[0] and "elapsed" in out[2]


def test_disabled_prints_nothing(clock, capsys) -> None:
    bar = progress(10, "collect", "ep", enabled=False)
    clock.t += 100
    bar.update(5)
    bar.close()
    assert bar.n == 5
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "10s"])
def test_bad_interval_is_a_clear_error(monkeypatch, value: str) -> None:
    monkeypatch.setenv(ENV_SECONDS, value)
    with pytest.raises(ValueError, match=rf"RLKIT_PROGRESS_SECONDS .*got {re.escape(repr(value))}"):
        progress(10, "collect", "ep")
    monkeypatch.setattr(progress_mod, "_stderr_is_tty", lambda: True)
    with pytest.raises(ValueError, match="RLKIT_PROGRESS_SECONDS"):  # on a terminal too
        progress(10, "collect", "ep")


def test_interval_values(monkeypatch) -> None:
    monkeypatch.delenv(ENV_SECONDS, raising=False)
    assert progress_seconds() == 10.0
    monkeypatch.setenv(ENV_SECONDS, " 0.25 ")
    assert progress_seconds() == 0.25


def test_a_terminal_gets_tqdm(monkeypatch) -> None:
    monkeypatch.setattr(progress_mod, "_stderr_is_tty", lambda: True)
    for enabled in (True, False):
        bar = progress(10, "rl", "step", initial=4, enabled=enabled)
        try:
            assert isinstance(bar, tqdm)
            assert (bar.n, bar.initial, bar.total) == (4, 4, 10)
            assert bar.disable is not enabled
            bar.update(2)
            bar.set_postfix(val="1")
            if enabled:
                assert bar.n == 6
        finally:
            bar.close()


def test_a_tool_in_a_pipe_prints_plain_progress_lines(tmp_path: Path) -> None:
    """As in the pipeline: stdout and stderr into one pipe, no terminal anywhere."""
    env = {**os.environ, ENV_SECONDS: "0.01"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "collect_demonstrations.py"), "--episodes", "4",
         "--workers", "1", "--max-steps", "50", "--output", str(tmp_path / "d")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    out = proc.stdout.decode()
    assert proc.returncode == 0, out
    assert "\r" not in out
    found = [line for line in out.splitlines() if line.startswith("collect: ")]
    assert found, out
    assert re.fullmatch(
        r"collect: 4/4 ep \(100\.0%\), [\d,.]+ (ep/s|s/ep), \d+s elapsed", found[-1]
    ), found
