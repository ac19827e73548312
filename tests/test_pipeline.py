"""train_optimized.sh / rlkit.pipeline: the real script, real stage processes, tiny sizes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PIPELINE_TINY

from rlkit.pipeline import STAGES, PipelineError, derive_workers, route_passthrough

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "train_optimized.sh"
# Tiny sizes for every stage, passed through after -- (each flag reaches the stages that have it).
TINY = [*PIPELINE_TINY, "--eval-every", "512"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLKIT_")}
    env["PYTHON"] = sys.executable
    env.update(extra)
    return env


def test_passthrough_goes_to_every_stage_that_has_the_flag():
    stages = [s for s in STAGES if s.name != "world_model"]
    routed = route_passthrough(["--seed", "3", "--epochs=7", "--algo", "sac"], stages)
    assert routed["collect"] == ["--seed", "3"]
    assert routed["bc"] == ["--seed", "3", "--epochs=7"]
    assert routed["rl"] == ["--seed", "3", "--algo", "sac"]
    with pytest.raises(PipelineError, match="--epoch .*not a flag of any stage"):
        route_passthrough(["--epoch", "3"], stages)
    with pytest.raises(PipelineError, match="--output is set by the pipeline"):
        route_passthrough(["--output", "x"], stages)
    with pytest.raises(PipelineError, match="'3' after -- is not a flag"):
        route_passthrough(["3"], stages)


def test_worker_counts_follow_the_seeds_formulas_and_overrides():
    counts, _ = derive_workers(16, {}, {})
    assert counts == {"collect": 12, "bc": 8, "rl": 8}
    counts, _ = derive_workers(1, {}, {})
    assert counts == {"collect": 1, "bc": 1, "rl": 2}
    counts, src = derive_workers(4, {"bc": 3}, {"RLKIT_RL_ENVS": "5"})
    assert counts == {"collect": 3, "bc": 3, "rl": 5}
    assert src["bc"] == "flag" and src["rl"] == "RLKIT_RL_ENVS"
    with pytest.raises(PipelineError, match="RLKIT_COLLECT_WORKERS must be an integer, got 'x'"):
        derive_workers(4, {}, {"RLKIT_COLLECT_WORKERS": "x"})


def test_a_failing_stage_stops_the_run_and_names_its_log(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [str(SCRIPT), "--output", str(run), "--", *TINY, "--obs-key", "nope"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    # valid settings (checked before collection) that fail at run time: no feature 'nope'
    assert f"stage 'bc' failed (exit code 1); its log: {run / 'logs' / 'bc.log'}" in proc.stderr
    assert "nope" in (run / "logs" / "bc.log").read_text()
    assert not (run / "rl").exists() and not (run / "summary.json").exists()
    state = json.loads((run / "pipeline.json").read_text())
    assert state["stages"]["collect"]["status"] == "done"
    assert state["stages"]["bc"]["status"] == "failed"


def test_tiny_run_killed_during_rl_resumes_and_writes_the_summary(tmp_path):
    """The real script end to end at tiny sizes with two RL seeds, SIGKILLed (with the stage
    and its seed runs) once RL has checkpointed; --resume skips collect and BC, resumes both
    seeds, and writes the summary with their aggregate."""
    run = tmp_path / "run"
    cmd = [str(SCRIPT), "--output", str(run), "--seeds", "2", "--", *TINY]
    cmd += ["--timesteps", "2048", "--checkpoint-every", "512"]
    quiet = {"stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL, "text": True}
    env = _env(RLKIT_CORES="3", RLKIT_PROGRESS_SECONDS="0.2")
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, **quiet)
    deadline = time.monotonic() + 240
    try:
        while not list((run / "rl").glob("seed_*/checkpoints/step_*/done")):
            assert proc.poll() is None, "the pipeline ended before RL wrote a checkpoint"
            assert time.monotonic() < deadline, "no RL checkpoint within 240 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the pipeline; the kernel then kills its stage
        first_out = proc.communicate()[0]
    # RLKIT_CORES=3 -> the seeds' formulas (collect 2, BC 1); only what the run uses
    assert "collection workers     2  (cores - 1, min 1, cap 12)" in first_out
    assert "as tensors if it fits in memory, else 1 DataLoader workers" in first_out
    assert "RL envs               16  batched cars in one process" in first_out
    assert "RL subprocess" not in first_out and "RL seeds               2" in first_out
    assert not (run / "summary.json").exists()
    collect_result = run / "demos" / "result.json"
    before = collect_result.stat().st_mtime_ns

    resumed = subprocess.run(
        [str(SCRIPT), "--resume", str(run)], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "== collect: done in an earlier run" in resumed.stdout
    assert "== bc: done in an earlier run" in resumed.stdout
    assert "--resume" in resumed.stdout.split("== rl:")[1].splitlines()[0]
    assert collect_result.stat().st_mtime_ns == before  # not collected again

    summary = json.loads((run / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["collect", "bc", "rl"]
    assert all(s["status"] == "done" and s["wall_s"] > 0 for s in summary["stages"])
    assert [s["resumed"] for s in summary["stages"]] == [False, False, True]
    assert summary["workers"] == {"collect": 2, "bc": 1, "rl": 2}  # kept from the first run
    assert summary["stages"][0]["details"]["episodes"] == 3
    assert summary["stages"][0]["details"]["workers"] == 2
    seeds = summary["seeds"]
    assert seeds["seeds"] == [0, 1] and seeds["test_episodes"] == 2
    assert len(seeds["metrics"]["rl_final.mean_return"]["values"]) == 2
    for s in (0, 1):  # both seeds finished their 2048 steps, one of them after a resume
        assert (
            json.loads((run / "rl" / f"seed_{s}" / "result.json").read_text())["timesteps"] >= 2048
        )
    # the seed that had checkpointed when the pipeline was killed resumed from there
    logs = [(run / "rl" / "logs" / f"seed_{s}.log").read_text() for s in (0, 1)]
    assert any("resuming" in log for log in logs)
    md = (run / "summary.md").read_text()
    assert "| collect |" in md and "| expert |" in md and "RL across seeds: 2 seeds" in md
    assert (run / "lap.gif").stat().st_size > 0 and (run / "learning_curves.png").is_file()
    for stage in ("collect", "bc", "rl"):
        assert (run / "logs" / f"{stage}.log").stat().st_size > 0
    # the RL stage's log shows each seed's progress while it runs, as plain lines
    rl_log = (run / "logs" / "rl.log").read_text()
    assert "seed 0 | rl: " in rl_log and "step/s" in rl_log and "\r" not in rl_log

    # resuming repeats the run's own settings: new flags are refused
    bad = subprocess.run(
        [str(SCRIPT), "--resume", str(run), "--quick"], env=_env(), capture_output=True, text=True
    )
    assert bad.returncode == 2 and "pass only --resume RUN_DIR" in bad.stderr
    # a new run into the same folder is refused, pointing at --resume
    again = subprocess.run(
        [str(SCRIPT), "--output", str(run)], env=_env(), capture_output=True, text=True
    )
    assert again.returncode == 2 and f"--resume {run}" in again.stderr


@pytest.mark.slow
def test_quick_preset_with_world_model_end_to_end(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [str(SCRIPT), "--quick", "--with-world-model", "--output", str(run)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["preset"] == "quick"
    ev = summary["evaluation"]
    assert ev["rl_final"]["mean_return"] > 0.5 * ev["expert"]["mean_return"]
    wm = summary["stages"][3]
    assert wm["stage"] == "world_model" and wm["status"] == "done"
    assert wm["details"]["iterations"] == 2 and (run / "world_model_episodes").is_dir()
