"""Faults a hostile user triggers in the trainers: finished runs resumed, foreign folders,
two writers, kills, Ctrl-C, a full disk, damaged checkpoints, bad bounds, non-finite data.

Every test drives the real tools (in-process ``main`` or a real child process) on tiny data;
kills wait for an observable event (a file appearing), never for a fixed time.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BC_TINY, RL_TINY, WM_TINY, as_argv, wait_for

from rlkit.bc import BCConfig, train_bc
from rlkit.cli.train_bc import main as bc_main
from rlkit.cli.train_rl import main as rl_main
from rlkit.cli.train_world_model import main as wm_main
from rlkit.config import parse_config
from rlkit.planet.storage import load_episode
from rlkit.planet.train import WorldModelConfig, checkpoints, train_world_model
from rlkit.rl import RLConfig, newest_checkpoint, train_rl
from rlkit.rundir import RunDir, RunInUseError, interrupt_message
from rlkit.utils import write_text_atomic

BC = as_argv(BC_TINY)
RL = ["--algo", "ppo", *as_argv(RL_TINY), "--n-steps", "32", "--eval-every", "0"]
WM = [*WM_TINY, "--eval-every", "0", "--loading-workers", "1"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch):
    """No repository config.yml; restore torch's thread count afterwards."""
    monkeypatch.chdir(tmp_path)
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _tool(module: str, *args: str, cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", f"rlkit.cli.{module}", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _log_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open())) if path.is_file() else []


# ------------------------------------------------------------- 1: resuming finished runs
def test_resuming_a_finished_bc_run_is_a_no_op(demos, tmp_path, capsys):
    out = tmp_path / "bc"
    argv = ["--data", str(demos), "--output", str(out), "--epochs", "2", *BC]
    assert bc_main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert bc_main([*argv, "--resume"]) == 0
    io = capsys.readouterr()
    assert "finished" in io.err and "nothing to do" in io.err
    assert "epochs          2" in io.out  # the saved summary is printed again
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # nothing rewritten


def test_rl_killed_after_final_model_completes_only_the_missing_outputs(
    bc_export, tmp_path, capsys
):
    out = tmp_path / "rl"
    argv = ["--init-from", str(bc_export), "--output", str(out), "--timesteps", "256",
            "--checkpoint-every", "128", "--critic-warmup", "0", *RL]  # fmt: skip
    assert rl_main(argv) == 0
    from stable_baselines3 import PPO

    w0 = PPO.load(out / "final_model.zip").policy.state_dict()
    # as if killed after final_model.zip, before eval.json and result.json
    (out / "eval.json").unlink()
    (out / "result.json").unlink()
    capsys.readouterr()
    assert rl_main([*argv, "--resume"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert (out / "eval.json").is_file() and json.loads((out / "result.json").read_text())[
        "complete"
    ]
    assert not (out / "checkpoints" / "step_0").exists()
    w1 = PPO.load(out / "final_model.zip").policy.state_dict()
    for k, v in w0.items():
        torch.testing.assert_close(w1[k], v, msg=k)  # not replaced by older weights
    # and now the run is finished: a further resume does nothing
    assert rl_main([*argv, "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_rerunning_a_finished_world_model_does_nothing(tmp_path, capsys):
    data, out = tmp_path / "d", tmp_path / "o"
    argv = [str(data), str(out), *WM, "--iterations", "2"]
    assert wm_main(argv) == 0
    metrics = (out / "metrics.csv").read_bytes()
    episodes = sorted(p.name for p in data.glob("episode_*.npz"))
    capsys.readouterr()
    assert wm_main(argv) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert (out / "metrics.csv").read_bytes() == metrics
    assert sorted(p.name for p in data.glob("episode_*.npz")) == episodes


# ------------------------------------------------------------- 2: --overwrite
def test_overwrite_replaces_only_rlkit_output(bc_export, demos, tmp_path, capsys):
    foreign = tmp_path / "mine"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "notes.txt").write_text("keep")
    (foreign / "sub" / "data.bin").write_bytes(b"keep")
    argv = ["--init-from", str(bc_export), "--output", str(foreign), "--timesteps", "64",
            *RL, "--overwrite"]  # fmt: skip
    assert rl_main(argv) == 1
    err = capsys.readouterr().err
    assert "notes.txt" in err and "sub/" in err and "not train_rl.py output" in err
    assert (foreign / "notes.txt").read_text() == "keep"
    assert (foreign / "sub" / "data.bin").read_bytes() == b"keep"
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt", "sub"]
    # a file where a run folder should be
    file = tmp_path / "afile"
    file.write_text("keep")
    assert bc_main(["--data", str(demos), "--output", str(file), *BC, "--overwrite"]) == 1
    assert "is a file" in capsys.readouterr().err and file.read_text() == "keep"
    # rlkit's own run is replaced
    own = tmp_path / "bc"
    base = ["--data", str(demos), "--output", str(own), "--epochs", "1", *BC]
    assert bc_main(base) == 0
    assert bc_main([*base[: -len(BC)], "--epochs", "2", *BC, "--overwrite"]) == 0
    assert len(_log_rows(own / "train_log.csv")) == 2


# ------------------------------------------------------------- 3: one writer per folder
def test_a_second_trainer_on_a_busy_run_folder_is_refused_naming_the_holder(demos, tmp_path):
    out = tmp_path / "bc"
    proc = _tool(
        "train_bc", "--data", str(demos), "--output", str(out), "--epochs", "100000",
        "--patience", "100000", *BC, cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_for(lambda: (out / "checkpoint.pt").is_file(), proc)
        cfg = BCConfig(data=str(demos), output=str(out), epochs=100000, patience=100000,
                       resume=True, **BC_TINY)  # fmt: skip
        with pytest.raises(RunInUseError, match=f"process {proc.pid} "):
            train_bc(cfg, progress=False)
    finally:
        proc.kill()
        proc.wait()
    # the kernel dropped the dead process's lock: the resume goes ahead
    cfg.epochs = len(_log_rows(out / "train_log.csv")) + 1
    assert train_bc(cfg, progress=False).epochs_run == cfg.epochs


def test_two_world_models_on_one_output_dir(tmp_path):
    data, out = tmp_path / "d", tmp_path / "o"
    proc = _tool("train_world_model", str(data), str(out), *WM, "--iterations", "100000",
                 cwd=tmp_path)  # fmt: skip
    try:
        wait_for(lambda: bool(checkpoints(out)), proc)
        with pytest.raises(RunInUseError, match=f"process {proc.pid} "):
            train_world_model(
                parse_config(WorldModelConfig, "world_model", [str(tmp_path / "d2"), str(out),
                             *WM]), progress=False,
            )  # fmt: skip
        # the episodes are the run's state too: another run may not write them meanwhile
        with pytest.raises(RunInUseError, match=f"process {proc.pid} "):
            train_world_model(
                parse_config(WorldModelConfig, "world_model", [str(data), str(tmp_path / "o2"),
                             *WM]), progress=False,
            )  # fmt: skip
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "o2").exists()  # the refused run left nothing


# ------------------------------------------------------------- 6 + 11: logs survive a kill
def test_bc_log_survives_sigkill_and_resume_continues_it(demos, tmp_path, capsys):
    out = tmp_path / "bc"
    args = ["--data", str(demos), "--output", str(out), "--epochs", "100000",
            "--patience", "100000", *BC]  # fmt: skip
    proc = _tool("train_bc", *args, cwd=tmp_path)
    try:
        wait_for(lambda: len(_log_rows(out / "train_log.csv")) >= 3, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rows = _log_rows(out / "train_log.csv")
    assert len(rows) >= 3 and [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    done = torch.load(out / "checkpoint.pt", weights_only=False)["total_epochs"]
    # resume (with a reachable end): the log keeps the checkpoint's rows and continues
    capsys.readouterr()
    assert bc_main([*args[:5], str(done + 2), *args[6:], "--resume"]) == 0
    assert f"resuming {out} at epoch {done}" in capsys.readouterr().err  # printed, visible
    epochs = [int(r["epoch"]) for r in _log_rows(out / "train_log.csv")]
    assert epochs == list(range(1, done + 3))


# ------------------------------------------------------------- 7: full disk, damaged files
def _limit_file_size(nbytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


def test_a_full_disk_leaves_no_temporary_file_and_the_rerun_recovers(demos, tmp_path):
    out = tmp_path / "bc"
    # 256x256 hidden: bc_policy.pt ~0.3 MB fits under the limit, checkpoint.pt (~1.6 MB) not
    args = ["--data", str(demos), "--output", str(out), "--epochs", "2", "--hidden", "256",
            "256", "--batch-size", "128", "--eval-episodes", "0"]  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-m", "rlkit.cli.train_bc", *args], cwd=tmp_path, capture_output=True,
        text=True, timeout=120, preexec_fn=_limit_file_size(1_000_000),
    )  # fmt: skip
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "cannot write" in res.stderr and "checkpoint.pt" in res.stderr
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # nothing fills the disk
    assert bc_main([*args, "--resume"]) == 0
    assert len(_log_rows(out / "train_log.csv")) == 2


def test_a_damaged_bc_checkpoint_is_skipped_with_a_warning(demos, tmp_path, capsys):
    out = tmp_path / "bc"
    argv = ["--data", str(demos), "--output", str(out), "--epochs", "3", *BC]
    assert bc_main(argv) == 0
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    (out / "result.json").unlink()  # as if killed before the end
    capsys.readouterr()
    assert bc_main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint.pt is damaged" in err and "starting from epoch 0" in err
    assert [int(r["epoch"]) for r in _log_rows(out / "train_log.csv")] == [1, 2, 3]


# ------------------------------------------------------------- 8: failed starts
def test_a_failed_start_leaves_no_run_behind(demos, tmp_path, capsys):
    out = tmp_path / "bc"
    base = ["--data", str(demos), "--output", str(out), "--epochs", "1", *BC]
    with pytest.raises(SystemExit) as e:
        bc_main([*base, "--seed", "-1"])
    assert e.value.code == 2 and not out.exists()
    if not torch.cuda.is_available():
        assert bc_main([*base, "--device", "cuda"]) == 1
        assert "no CUDA device" in capsys.readouterr().err and not out.exists()
    # a folder holding only what a failed start of an older version wrote is not a run
    out.mkdir()
    (out / "config.resolved.yml").write_text("bc: {}\n")
    (out / "command.txt").write_text("python train_bc.py\n")
    assert bc_main(base) == 0


# ------------------------------------------------------------- 9: identical WM resume
def test_world_model_killed_between_an_episode_and_its_checkpoint_resumes_identically(tmp_path):
    def cfg(d: str, o: str) -> WorldModelConfig:
        argv = [str(tmp_path / d), str(tmp_path / o), *WM, "--iterations", "3"]
        return parse_config(WorldModelConfig, "world_model", argv)

    train_world_model(cfg("d1", "o1"), progress=False)
    train_world_model(cfg("d2", "o2"), progress=False)
    # the state a SIGKILL after iteration 3's episode, before its checkpoint, leaves
    (tmp_path / "o2" / "checkpoints" / "ckpt_000003.pt").unlink()
    (tmp_path / "o2" / "result.json").unlink()
    r = train_world_model(cfg("d2", "o2"), progress=False)
    assert r.resumed_from == 2
    assert (tmp_path / "o2" / "discarded_episodes" / "episode_000004.npz").is_file()
    a = torch.load(checkpoints(tmp_path / "o1")[-1], weights_only=False)
    b = torch.load(checkpoints(tmp_path / "o2")[-1], weights_only=False)
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, msg=k)
    eps1, eps2 = (sorted((tmp_path / d).glob("episode_*.npz")) for d in ("d1", "d2"))
    assert [p.name for p in eps1] == [p.name for p in eps2]
    for p, q in zip(eps1, eps2, strict=True):
        np.testing.assert_array_equal(load_episode(p)["action"], load_episode(q)["action"])
    m1, m2 = ((tmp_path / o / "metrics.csv") for o in ("o1", "o2"))
    cols = ["iteration", "train_step", "episodes", "loss", "kl"]
    assert [[r[c] for c in cols] for r in _log_rows(m1)] == [
        [r[c] for c in cols] for r in _log_rows(m2)
    ]


# ------------------------------------------------------------- 5: env.json
def test_world_model_never_writes_env_json_over_episodes_of_another_env(tmp_path, capsys):
    data = tmp_path / "d"
    small = WM  # racing frames, 2-dim actions
    assert wm_main([str(data), str(tmp_path / "o"), "--env", "racing", *small,
                    "--iterations", "1"]) == 0  # fmt: skip
    (data / "env.json").unlink()
    capsys.readouterr()
    assert wm_main([str(data), str(tmp_path / "o2"), *small, "--iterations", "1"]) == 1
    err = capsys.readouterr().err
    assert "no env.json" in err and "--env" in err and "Traceback" not in err
    assert not (data / "env.json").exists() and not (tmp_path / "o2").exists()
    # the matching env is accepted and the description recorded, with a visible note
    assert wm_main([str(data), str(tmp_path / "o3"), "--env", "racing", *small,
                    "--iterations", "1"]) == 0  # fmt: skip
    assert "env.json was missing" in capsys.readouterr().err
    assert json.loads((data / "env.json").read_text())["env"] == "racing"


# ------------------------------------------------------------- 10: Ctrl-C
@pytest.mark.parametrize("tool", ["train_bc", "train_rl", "train_world_model"])
def test_ctrl_c_prints_one_line_and_exits_130(tool, demos, bc_export, tmp_path):
    out = tmp_path / "run"
    if tool == "train_bc":
        args = ["--data", str(demos), "--output", str(out), "--epochs", "100000",
                "--patience", "100000", *BC]  # fmt: skip
        saved = lambda: (out / "checkpoint.pt").is_file()  # noqa: E731
    elif tool == "train_rl":
        args = ["--init-from", str(bc_export), "--output", str(out), "--timesteps",
                "10000000", "--checkpoint-every", "128", *RL, "--vec", "subproc",
                "--envs", "2"]  # fmt: skip
        saved = lambda: newest_checkpoint(out) is not None  # noqa: E731
    else:
        args = [str(tmp_path / "d"), str(out), *WM, "--iterations", "100000"]
        saved = lambda: bool(checkpoints(out))  # noqa: E731
    # its own process group, like a shell job: Ctrl-C signals the tool and its workers
    proc = _tool(tool, *args, cwd=tmp_path, start_new_session=True)
    try:
        wait_for(saved, proc)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert "interrupted; checkpoint at" in last and "Resume with:" in last
    if tool != "train_world_model":
        assert last.endswith("--resume")


# ------------------------------------------------------------- 12: bounds
@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (bc_main, ["--workers", "100000"], "workers must be in [0, 64]"),
        (bc_main, ["--hidden", "100000"], "hidden must be in [1, 16384], got [100000]"),
        (bc_main, ["--epochs", "10000000"], "epochs must be in [1, 1e6]"),
        (bc_main, ["--epochs", "100000000000000000000"], "--epochs"),
        (bc_main, ["--lr", "1e20"], "lr must be in (0, 1]"),
        (rl_main, ["--envs", "100000"], "envs must be in [1, 4096]"),
        (rl_main, ["--n-steps", "0"], "n_steps must be in [2,"),
        (rl_main, ["--lr", "1e20"], "lr must be in"),
        (rl_main, ["--timesteps", "100000000000"], "timesteps must be in"),
        (wm_main, ["--batch-size", "1000000000"], "batch_size must be in [1, 4096]"),
        (wm_main, ["--top-k", "50", "--candidates", "10"], "top_k must be <= candidates"),
    ],
)
def test_out_of_range_flags_exit_2_naming_the_flag(main, argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# ------------------------------------------------------------- 4: non-finite input
def test_nan_stats_stop_bc_naming_the_file_and_feature(demos, tmp_path, capsys):
    import shutil

    data = tmp_path / "demos"
    shutil.copytree(demos, data)
    stats = json.loads((data / "meta" / "stats.json").read_text())
    stats["observation.state"]["std"][0] = float("nan")
    (data / "meta" / "stats.json").write_text(json.dumps(stats))
    assert bc_main(["--data", str(data), "--output", str(tmp_path / "o"), *BC]) == 1
    err = capsys.readouterr().err
    assert "meta/stats.json" in err and "observation.state" in err and "NaN" in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------- 17 + 19: modes, progress
def test_outputs_follow_the_umask_and_the_rl_bar_ends_at_its_total(bc_export, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "rl"
        cfg = parse_config(
            RLConfig, "rl", ["--init-from", str(bc_export), "--output", str(out),
                             "--timesteps", "300", *RL],
        )  # fmt: skip
        train_rl(cfg, progress=True)  # PPO rolls out 4 x 32 = 128 steps at a time: 384 > 300
    finally:
        os.umask(old)
    for name in ("result.json", "eval.json", "config.resolved.yml", "command.txt",
                 "final_model.zip", "learning_curve.csv"):  # fmt: skip
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    shown = "".join(capsys.readouterr())  # a tqdm bar (stderr) or progress lines (stdout)
    assert "300/300" in shown and "384/300" not in shown


def test_an_interruption_right_after_a_checkpoint_is_written_reports_it(tmp_path):
    """Ctrl-C can land between a checkpoint's rename and the line after it: the message
    still names the checkpoint on disk, and never one that was not written."""
    run = RunDir(tmp_path / "run", "bc", resume=False, overwrite=False,
                 has_checkpoint=lambda p: (p / "checkpoint.pt").is_file())  # fmt: skip
    ckpt = run.path / "checkpoint.pt"
    with run:
        run.start(BCConfig(), section="bc")
        with run.saving("checkpoint at epoch 1", ckpt):
            write_text_atomic(ckpt, "1")
        with pytest.raises(KeyboardInterrupt), run.saving("checkpoint at epoch 2", ckpt):
            raise KeyboardInterrupt  # before the write: epoch 1 is what is on disk
        assert "interrupted; checkpoint at epoch 1 in" in interrupt_message()
        with pytest.raises(KeyboardInterrupt), run.saving("checkpoint at epoch 3", ckpt):
            write_text_atomic(ckpt, "3")
            raise KeyboardInterrupt  # after the rename, before the block ends
        assert "interrupted; checkpoint at epoch 3 in" in interrupt_message()
