"""train_optimized.sh / rlkit.pipeline when things go wrong: kills, Ctrl-C, two pipelines on
one run folder, bad settings found late, bad core counts, --help without rlkit.

Real processes throughout: the real script, real stage processes, tiny sizes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PIPELINE_TINY

from rlkit.pipeline import STAGES, Plan, main, stage_argv

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "train_optimized.sh"
TINY = [*PIPELINE_TINY, "--eval-every", "256"]
#: BC that trains until it is stopped (early stopping off), silent for ~13 s per epoch on
#: 2 cores (batches of 1 over 20,000 frames): a stage that prints nothing, so nothing but
#: the pipeline's own care (not a broken pipe) can stop it when the pipeline dies.
ENDLESS_BC = [
    *TINY, "--episodes", "20", "--max-steps", "1000", "--batch-size", "1",
    "--epochs", "1000000", "--patience", "1000000",
]  # fmt: skip
FORMULAS = {"collect": "cores - 1, min 1, cap 12", "bc": "cores / 2, min 1, cap 8",
            "rl": "cores - 1, min 2, cap 8"}  # fmt: skip

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLKIT_")}
    env["PYTHON"] = sys.executable
    env["RLKIT_PROGRESS_SECONDS"] = "0.1"  # stages print progress lines (their stdout is a pipe)
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# processes, from /proc
# --------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid``; None when it no longer exists."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")  # a zombie is dead, waiting to be reaped


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st is not None and st[1] == pid:
                kids.append(int(d.name))
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_for(what: str, check, proc: subprocess.Popen, timeout: float = 120.0):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert proc.poll() is None, f"the pipeline ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.05)


class EndlessBC:
    """The pipeline (own session) with a BC stage that trains until stopped."""

    def __init__(self, tmp_path: Path) -> None:
        self.run = tmp_path / "run"
        self.out, self.err = tmp_path / "out.txt", tmp_path / "err.txt"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [str(SCRIPT), "--output", str(self.run), "--", *ENDLESS_BC],
                env=_env(),
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.stage: int | None = None

    def wait_for_bc(self) -> int:
        """The BC stage's pid, once the pipeline has shown its progress line (it trains)."""

        def bc_child() -> int | None:
            kids = [k for k in _children(self.proc.pid) if "train_bc" in _cmdline(k)]
            return kids[0] if kids and "\nbc: " in self.out.read_text() else None

        self.stage = _wait_for("a BC stage with its output folder", bc_child, self.proc)
        return self.stage

    def stop(self) -> None:
        for pid, kill in ((self.proc.pid, os.killpg), (self.stage, os.kill)):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, signal.SIGKILL)
        self.proc.wait()

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()


@pytest.fixture
def endless_bc(tmp_path):
    pipeline = EndlessBC(tmp_path)
    yield pipeline
    pipeline.stop()


# --------------------------------------------------------------------------------------------
# 1. a stage dies with the pipeline
# --------------------------------------------------------------------------------------------


def test_sigkill_of_the_pipeline_takes_its_stage_along(endless_bc):
    stage = endless_bc.wait_for_bc()
    cmdline = _cmdline(stage)
    os.kill(endless_bc.proc.pid, signal.SIGKILL)  # the pipeline only, not its group
    endless_bc.proc.wait()
    deadline = time.monotonic() + 5
    while _alive(stage) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(stage), "the BC stage kept training after the pipeline was killed"
    # the stage is this rlkit's own tool, started as a module, not a root script by path
    assert "-m rlkit.cli.train_bc " in cmdline
    assert "-m rlkit.cli.train_bc " in (endless_bc.run / "logs" / "bc.log").read_text()


# --------------------------------------------------------------------------------------------
# 2. one pipeline per run folder
# --------------------------------------------------------------------------------------------


def test_a_second_pipeline_on_a_run_in_use_is_refused_naming_the_holder(endless_bc):
    endless_bc.wait_for_bc()
    second = subprocess.Popen(
        [str(SCRIPT), "--resume", str(endless_bc.run)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = second.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(second.pid, signal.SIGKILL)
    assert second.returncode == 2, out[-2000:] + err[-2000:]
    assert f"in use by process {endless_bc.proc.pid}" in err
    assert "== bc" not in out  # nothing was run
    # the holder is untouched: still running its stage
    assert endless_bc.proc.poll() is None and _alive(endless_bc.stage)
    state = json.loads((endless_bc.run / "pipeline.json").read_text())
    assert state["stages"]["bc"]["status"] == "running"


# --------------------------------------------------------------------------------------------
# 9. Ctrl-C to the whole process group
# --------------------------------------------------------------------------------------------


def test_sigint_to_the_process_group_stops_cleanly_with_one_line(endless_bc):
    stage = endless_bc.wait_for_bc()
    os.killpg(endless_bc.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert endless_bc.proc.wait(timeout=60) == 130
    deadline = time.monotonic() + 5
    while _alive(stage) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(stage)
    err = endless_bc.err.read_text()
    run = endless_bc.run
    line = f"interrupted during stage 'bc'; resume with ./train_optimized.sh --resume {run}"
    assert err.count(line) == 1, err[-3000:]
    assert "Traceback" not in endless_bc.output()
    state = json.loads((endless_bc.run / "pipeline.json").read_text())
    assert state["stages"]["collect"]["status"] == "done"
    assert state["stages"]["bc"]["status"] == "interrupted"


# --------------------------------------------------------------------------------------------
# 3. resuming a stage that did not finish
# --------------------------------------------------------------------------------------------


def _crafted_run(run: Path, rl_status: str, passthrough: list[str]) -> Plan:
    """A run whose collection and BC finished and whose RL stage is ``rl_status``."""
    plan = Plan(
        run_dir=run,
        cores=2,
        workers={"collect": 1, "bc": 1, "rl": 2},
        worker_sources=dict(FORMULAS),
        quick=False,
        with_world_model=False,
        passthrough=passthrough,
        stages={
            "collect": {"status": "done", "wall_s": 1.0},
            "bc": {"status": "done", "wall_s": 2.0},
            "rl": {"status": rl_status, "log": str(run / "logs" / "rl.log")},
        },
    )
    run.mkdir(parents=True)
    plan.save()
    return plan


@pytest.mark.parametrize("status", ["running", "interrupted", "failed"])
def test_an_unfinished_stage_with_output_gets_its_resume_flag(tmp_path, status):
    plan = _crafted_run(tmp_path / "run", status, [])
    rl = next(s for s in STAGES if s.name == "rl")
    assert "--resume" not in stage_argv(plan, rl, [], resume=True)  # no output: a fresh start
    (plan.run_dir / "rl").mkdir()
    (plan.run_dir / "rl" / "final_model.zip").write_bytes(b"")  # killed before eval.json
    assert stage_argv(plan, rl, [], resume=True)[-1] == "--resume"
    collect = STAGES[0]  # collection writes its dataset atomically: it starts over
    assert "--resume" not in stage_argv(plan, collect, [], resume=True)


def test_resume_reruns_the_unfinished_stage_with_its_resume_flag(tmp_path):
    """Process level: --resume skips the finished stages and starts RL with --resume.

    The crafted run has no BC export, so train_rl.py itself fails; what it completes with a
    real run is tested with the tool (tests/test_rl.py) and in the slow test below.
    """
    run = tmp_path / "run"
    _crafted_run(run, "interrupted", [*TINY, "--timesteps", "512"])
    (run / "rl").mkdir()
    (run / "rl" / "final_model.zip").write_bytes(b"")
    proc = subprocess.run(
        [str(SCRIPT), "--resume", str(run)], env=_env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert "== collect: done in an earlier run" in proc.stdout
    assert "== bc: done in an earlier run" in proc.stdout
    rl_line = proc.stdout.split("== rl:")[1].splitlines()[0]
    assert "--resume" in rl_line.split()
    logged = (run / "logs" / "rl.log").read_text().splitlines()[0]
    assert "-m rlkit.cli.train_rl " in logged and " --resume" in logged
    state = json.loads((run / "pipeline.json").read_text())
    assert state["stages"]["rl"]["resumed"] is True


@pytest.mark.slow
def test_run_killed_between_final_model_and_result_completes_on_resume(tmp_path):
    run = tmp_path / "run"
    cmd = [str(SCRIPT), "--output", str(run), "--", *TINY, "--timesteps", "512"]
    first = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # as if killed after rl/final_model.zip was written, before eval.json and result.json
    for name in ("eval.json", "result.json"):
        (run / "rl" / name).unlink()
    (run / "summary.json").unlink()
    state = json.loads((run / "pipeline.json").read_text())
    state["stages"]["rl"] = {"status": "running", "log": str(run / "logs" / "rl.log")}
    (run / "pipeline.json").write_text(json.dumps(state))

    again = subprocess.run(
        [str(SCRIPT), "--resume", str(run)], env=_env(), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "--resume" in again.stdout.split("== rl:")[1].splitlines()[0].split()
    assert (run / "rl" / "eval.json").is_file() and (run / "rl" / "result.json").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert [s["status"] for s in summary["stages"]] == ["done", "done", "done"]
    assert summary["stages"][2]["resumed"] is True


# --------------------------------------------------------------------------------------------
# 4. every stage's settings are checked before the first stage starts
# --------------------------------------------------------------------------------------------


def test_a_typo_in_a_late_stage_stops_the_run_before_any_stage(tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("rl:\n  timestepz: 1000\n")
    run = tmp_path / "run"
    proc = subprocess.run(
        [str(SCRIPT), "--output", str(run), "--", *TINY, "--config", str(bad)],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "stage 'rl' (train_rl.py) settings:" in proc.stderr
    assert "timestepz" in proc.stderr and "did you mean 'timesteps'" in proc.stderr
    assert not run.exists()  # nothing collected, nothing trained, no folder

    # a bad value after -- is named with its stage too, also when argparse rejects it
    for value, problem in (("0", "epochs must be"), ("two", "invalid int value: 'two'")):
        assert main(["--output", str(run), "--", "--epochs", value]) == 2
        err = capsys.readouterr().err
        assert "stage 'bc' (train_bc.py) settings:" in err and problem in err, err
        assert not run.exists()


def test_the_pipelines_config_flag_reaches_every_stage_and_is_given_once(tmp_path, capsys):
    cfg = tmp_path / "mine.yml"
    cfg.write_text("bc:\n  epochz: 3\n")
    run = tmp_path / "run"
    assert main(["--config", str(cfg), "--output", str(run)]) == 2
    err = capsys.readouterr().err
    assert "stage 'bc' (train_bc.py) settings:" in err and "epochz" in err, err
    assert str(cfg) in err and not run.exists()

    assert main(["--config", str(cfg), "--output", str(run), "--", "--config", str(cfg)]) == 2
    assert "--config is given twice (before and after --)" in capsys.readouterr().err
    assert main(["--resume", str(run), "--config", str(cfg)]) == 2
    assert "pass only --resume RUN_DIR" in capsys.readouterr().err
    assert not run.exists()


def test_resume_checks_the_remaining_stages_before_running_any(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("rl:\n  algo: sacc\n")
    run = tmp_path / "run"
    _crafted_run(run, "interrupted", [*TINY, "--config", str(bad)])
    before = (run / "pipeline.json").read_text()
    proc = subprocess.run(
        [str(SCRIPT), "--resume", str(run)], env=_env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "stage 'rl' (train_rl.py) settings:" in proc.stderr and "sacc" in proc.stderr
    assert not (run / "logs").exists()  # no stage was started
    assert (run / "pipeline.json").read_text() == before


# --------------------------------------------------------------------------------------------
# 5. core and worker counts are bounded, naming the flag or variable
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--cores", "-4"], {}, "--cores: cores must be in [1, 4096], got -4"),
        (["--cores", "100000"], {}, "--cores: cores must be in [1, 4096], got 100000"),
        ([], {"RLKIT_CORES": "0"}, "RLKIT_CORES must be in [1, 4096], got 0"),
        ([], {"RLKIT_CORES": "four"}, "RLKIT_CORES must be an integer, got 'four'"),
        (["--rl-envs", "0"], {}, "--rl-envs: rl_envs must be in [1, 4096], got 0"),
        (
            ["--collect-workers", "-1"],
            {},
            "--collect-workers: collect_workers must be in [1, 4096]",
        ),
        ([], {"RLKIT_BC_WORKERS": "0"}, "RLKIT_BC_WORKERS must be in [1, 4096], got 0"),
        ([], {"RLKIT_RL_ENVS": "9999"}, "RLKIT_RL_ENVS must be in [1, 4096], got 9999"),
    ],
)
def test_bad_core_and_worker_counts_are_refused(tmp_path, monkeypatch, capsys, args, env, named):
    for k in [k for k in os.environ if k.startswith("RLKIT_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # the flag after -- is bad too: whatever is checked first, nothing can run
    code = main([*args, "--output", str(tmp_path / "run"), "--", "--no-such-flag"])
    assert code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_rlkit_cores_is_read_by_the_pipeline_naming_the_variable(tmp_path):
    proc = subprocess.run(
        [str(SCRIPT), "--output", str(tmp_path / "run")],
        env=_env(RLKIT_CORES="0"), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "RLKIT_CORES must be in [1, 4096], got 0" in proc.stderr
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# 6. --help never installs
# --------------------------------------------------------------------------------------------


def test_help_without_rlkit_prints_usage_and_installs_nothing(tmp_path):
    # a Python that cannot import rlkit (no site-packages, no current folder on its path)
    # and has no pip: were the script to try an install, it would fail here, not download
    bare = tmp_path / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "$@"\n')
    bare.chmod(0o755)
    probe = subprocess.run([str(bare), "-c", "import rlkit"], cwd=ROOT, capture_output=True)
    assert probe.returncode != 0
    for flag in ("--help", "-h"):
        proc = subprocess.run(
            [str(SCRIPT), "--quick", flag], env=_env(PYTHON=str(bare)), capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "./train_optimized.sh --resume RUN_DIR" in proc.stdout
        assert "installing" not in proc.stdout + proc.stderr
        assert "pip install" not in proc.stdout + proc.stderr


def test_help_with_rlkit_prints_the_pipelines_help(tmp_path):
    proc = subprocess.run(
        [str(SCRIPT), "--help"], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert "usage: train_optimized.sh" in proc.stdout and "--resume RUN_DIR" in proc.stdout
    assert "RLKIT_CORES" in proc.stdout
