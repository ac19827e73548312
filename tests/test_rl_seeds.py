"""train_rl.py --seeds: parallel runs, their aggregate, resume, failures and bad input; and the
statistics across seeds (rlkit.aggregate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import RL_TINY, as_argv
from scipy import stats

from rlkit.aggregate import bootstrap_ci, iqm, summarize
from rlkit.cli.train_rl import main
from rlkit.rl import RLConfig, train_rl
from rlkit.rl.seeds import plan_parallel, run_bytes
from rlkit.utils import available_cores

#: 1,024 steps of PPO past the critic warm-up, two validation evaluations, 3 test tracks
TINY = {
    **RL_TINY,
    "timesteps": 1024,
    "n_steps": 64,
    "critic_warmup": 256,
    "eval_every": 512,
    "checkpoint_every": 512,
    "test_episodes": 3,
}


def _argv(bc_export: Path, out: Path, *extra: str) -> list[str]:
    return ["--init-from", str(bc_export), "--output", str(out), *as_argv(TINY), *extra]


def test_seeds_run_in_parallel_equal_single_runs_and_resume(bc_export, tmp_path, capsys):
    out = tmp_path / "seeds"
    assert main(_argv(bc_export, out, "--seeds", "0", "1")) == 0
    printed = capsys.readouterr()
    assert "2 seeds (0, 1), 2 at once" in printed.err
    assert "final policy: return" in printed.out

    evals = {s: json.loads((out / f"seed_{s}" / "eval.json").read_text()) for s in (0, 1)}
    # every seed, BC and the expert on the same test tracks
    assert evals[0]["expert"] == evals[1]["expert"] and evals[0]["bc"] == evals[1]["bc"]
    agg = json.loads((out / "aggregate.json").read_text())
    assert agg["seeds"] == [0, 1] and agg["test_episodes"] == 3
    finals = [evals[s]["rl_final"]["mean_return"] for s in (0, 1)]
    ret = agg["metrics"]["rl_final.mean_return"]
    assert ret["values"] == finals and ret["mean"] == pytest.approx(np.mean(finals))
    assert ret["ci_low"] <= ret["mean"] <= ret["ci_high"]
    assert (out / "learning_curves.png").stat().st_size > 0
    assert "| final policy: return |" in (out / "aggregate.md").read_text()

    # a seed of --seeds is the same run as that seed alone
    single = tmp_path / "single"
    cfg = RLConfig(init_from=str(bc_export), output=str(single), seed=1, **TINY)
    train_rl(cfg, progress=False)
    alone = json.loads((single / "eval.json").read_text())
    assert alone["rl_final"] == evals[1]["rl_final"]
    assert alone["rl_selected"] == evals[1]["rl_selected"]

    # --resume of the finished run: nothing to do
    assert main(_argv(bc_export, out, "--seeds", "0", "1", "--resume")) == 0
    assert "this run is finished" in capsys.readouterr().err
    # an unfinished seed resumes; a finished one is left as it is
    (out / "seed_1" / "result.json").unlink()
    (out / "result.json").unlink()
    kept = (out / "seed_0" / "final_model.zip").stat().st_mtime_ns
    assert main(_argv(bc_export, out, "--seeds", "0", "1", "--resume")) == 0
    assert (out / "seed_0" / "final_model.zip").stat().st_mtime_ns == kept
    assert (out / "seed_1" / "result.json").is_file()
    assert "resuming" in (out / "logs" / "seed_1.log").read_text()


def test_a_failing_seed_is_named_and_the_others_are_kept(bc_export, tmp_path, capsys):
    out = tmp_path / "seeds"
    (out / "seed_1").mkdir(parents=True)
    (out / "seed_1" / "notes.txt").write_text("not rlkit's")  # seed 1's run refuses it
    assert main(_argv(bc_export, out, "--seeds", "0", "1", "--resume")) == 1
    err = capsys.readouterr().err
    assert f"seed 1 failed (exit code 1); its log: {out / 'logs' / 'seed_1.log'}" in err
    assert "Finished seeds kept: [0]" in err
    assert "notes.txt" in (out / "logs" / "seed_1.log").read_text()
    assert json.loads((out / "seed_0" / "result.json").read_text())["complete"]
    assert not (out / "aggregate.json").exists()
    assert (out / "seed_1" / "notes.txt").read_text() == "not rlkit's"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seeds", "0", "1", "0"], "--seeds has duplicates: [0, 1, 0]"),
        (["--seeds", "-1", "2"], "seeds must be in [0, 2^32), got [-1, 2]"),
        (["--seeds", "0", "1", "--seed", "3"], "pass either --seed or --seeds, not both"),
        (["--seeds", "0", "--eval-only", "m.zip"], "--seeds trains; --eval-only"),
        (["--seeds", "0", "--parallel", "0"], "parallel must be"),
    ],
)
def test_bad_seeds_stop_before_anything_is_written(flags, message, tmp_path, capsys):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        main(["--output", str(out), *flags])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_parallel_runs_must_fit_in_memory():
    ppo = RLConfig(seeds=[0, 1, 2, 3], parallel=4)
    gib = 2**30
    with pytest.raises(ValueError, match=r"--parallel 4: 4 runs at once need ~3.0 GiB, 2.0 GiB"):
        plan_parallel(ppo, available=2 * gib)
    assert plan_parallel(RLConfig(seeds=[0, 1, 2, 3], parallel=2), available=2 * gib) == 2
    # automatic: as many as fit, at most one per core
    fit_two = int(1.6 * gib)
    assert plan_parallel(RLConfig(seeds=[0, 1, 2, 3]), available=fit_two) == min(
        2, available_cores()
    )
    assert plan_parallel(RLConfig(seeds=[0, 1, 2, 3]), available=run_bytes(ppo)) == 1
    sac = RLConfig(algo="sac", seeds=[0], buffer_size=10**8)
    with pytest.raises(ValueError, match="lower --buffer-size"):
        plan_parallel(sac, available=8 * gib)


def test_iqm_and_bootstrap_ci_match_scipy():
    x = np.array([3.0, 9.0, 1.0, 4.0, 100.0, 5.0, 2.0, 6.0])
    assert iqm(x) == pytest.approx(stats.trim_mean(x, 0.25))
    low, high = bootstrap_ci(x, np.mean, seed=0)
    ref = stats.bootstrap((x,), np.mean, method="percentile", n_resamples=10_000, random_state=0)
    # the same percentile interval up to the resamples drawn
    assert low == pytest.approx(ref.confidence_interval.low, rel=0.1)
    assert high == pytest.approx(ref.confidence_interval.high, rel=0.1)
    assert bootstrap_ci(x, np.mean, seed=1) == bootstrap_ci(x, np.mean, seed=1)
    # a run that never reached a goal counts as +inf: the median stays defined
    s = summarize([10.0, None, 30.0], "median")
    assert s["median"] == 30.0 and s["ci_high"] == float("inf") and s["values"][1] is None
