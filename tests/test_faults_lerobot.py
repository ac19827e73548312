"""Faults in collection, merge, reading and validation: nothing lost, nothing silent.

Real datasets on disk, real pyarrow, real processes (a SIGKILLed writer, a Ctrl-C'd
collection); each test failed before the fix it covers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Spec, build

import rlkit
from rlkit.cli.collect_demonstrations import main as collect_main
from rlkit.cli.merge_lerobot_dataset import main as merge_main
from rlkit.cli.validate_lerobot import main as validate_main
from rlkit.collect import CollectConfig, collect
from rlkit.lerobot import DatasetReader, DatasetWriter, LeRobotFormatError, write_dataset
from rlkit.lerobot.merge import MergeConfig, merge
from rlkit.lerobot.validate import validate_dataset

REPO = Path(rlkit.__file__).resolve().parents[1]
DATA_FILE = "data/chunk-000/file-000.parquet"
HUGE = "100000000000000000000"  # 1e20: argparse's int() takes it, nothing else should


def tiny_dataset(
    root: Path, seed: int = 0, lengths: tuple[int, ...] = (5, 7), overwrite: bool = False
) -> Path:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    data = {
        "observation.state": rng.standard_normal((n, 3)).astype(np.float32),
        "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "episode_index": np.repeat(np.arange(len(lengths)), lengths),
    }
    return write_dataset(root, data, fps=10, overwrite=overwrite)


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def python_env() -> dict[str, str]:
    """The environment of a child python that imports this checkout's rlkit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# ----------------------------------------------------------------------------- 1. --overwrite
def test_collect_overwrite_refuses_a_folder_of_other_files_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demos"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "sub/results.csv").write_text("1,2")
    argv = ["--episodes", "3", "--workers", "1", "--max-steps", "30", "--overwrite"]
    assert collect_main([*argv, "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{out} holds files that are not LeRobot dataset output (notes.txt, sub/)" in err
    assert err.strip().count("\n") == 0  # one line: refused before the progress bar started
    assert tree(out) == ["notes.txt", "sub", "sub/results.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos"]

    # a collected dataset with a note dropped into it is not replaced either
    ds = tmp_path / "ds"
    collect(CollectConfig(episodes=1, workers=1, max_steps=30, output=str(ds)), progress=False)
    (ds / "notes.txt").write_text("my notes")
    before = tree(ds)
    assert collect_main([*argv, "--output", str(ds)]) == 1
    assert "(notes.txt)" in capsys.readouterr().err
    assert tree(ds) == before and DatasetReader(ds).num_episodes == 1


def test_merge_overwrite_refuses_a_regular_file_and_a_folder_of_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tiny_dataset(tmp_path / "src")
    target = tmp_path / "merged.parquet"
    target.write_bytes(b"precious")
    assert merge_main(["--sources", str(src), "--output", str(target), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert f"{target} is a file, not a LeRobot dataset folder" in err
    assert target.read_bytes() == b"precious"

    folder = tmp_path / "merged"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("n")
    with pytest.raises(FileExistsError, match=r"not LeRobot dataset output \(notes\.txt, sub/\)"):
        merge(MergeConfig(sources=[str(src)], output=str(folder), overwrite=True), progress=False)
    assert tree(folder) == ["notes.txt", "sub"]

    # an earlier merge output is still replaced
    out = tmp_path / "out"
    merge(MergeConfig(sources=[str(src)], output=str(out)), progress=False)
    other = tiny_dataset(tmp_path / "src2", seed=1)
    cfg = MergeConfig(sources=[str(src), str(other)], output=str(out), overwrite=True)
    merge(cfg, progress=False)
    assert DatasetReader(out).num_episodes == 4


def test_publish_refuses_a_dataset_that_gained_other_files_while_writing(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "ds")
    before = tree(root)
    w = DatasetWriter(root, fps=10, overwrite=True)
    w.add({"observation.state": np.ones((4, 3), np.float32), "episode_index": np.zeros(4, int)})
    (root / "notes.txt").write_text("written meanwhile")
    with pytest.raises(FileExistsError, match=r"\(notes\.txt\)"):
        w.close()
    assert tree(root) == sorted([*before, "notes.txt"])
    assert DatasetReader(root).num_episodes == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # the new one was discarded


def test_a_dataset_inside_a_run_folder_is_still_overwritten(tmp_path: Path) -> None:
    """What bc.py's DAgger does: write_dataset(run / "dagger", overwrite=True) every round."""
    run = tmp_path / "bc"
    run.mkdir()
    (run / "bc_policy.pt").write_bytes(b"weights")
    tiny_dataset(run / "dagger")
    tiny_dataset(run / "dagger", seed=1, lengths=(3, 3, 3), overwrite=True)
    assert DatasetReader(run / "dagger").num_episodes == 3
    assert sorted(p.name for p in run.iterdir()) == ["bc_policy.pt", "dagger"]


# ----------------------------------------------------------------------------- 2. SIGKILL
KILLED_WRITER = """
import sys
import numpy as np
from rlkit.lerobot import DatasetWriter
w = DatasetWriter(sys.argv[1], fps=20)
w.add({"observation.state": np.zeros((500, 21), np.float32),
       "episode_index": np.zeros(500, np.int64)})
print("added", flush=True)
sys.stdin.read()  # until killed
"""


def killed_writer(out: Path) -> Path:
    """Start a real writer of ``out`` in another process, SIGKILL it; its temp folder."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=python_env(),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "added"
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs
        proc.wait()
    leftover = out.parent / f".{out.name}.tmp-{proc.pid}"
    assert leftover.is_dir() and (leftover / "meta").is_dir()
    return leftover


def test_the_next_collection_removes_what_a_killed_one_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demos"
    leftover = killed_writer(out)
    # a temp folder of a process that is still running is left alone
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    busy = tmp_path / f".demos.tmp-{alive.pid}"
    busy.mkdir()
    try:
        collect(CollectConfig(episodes=1, workers=1, max_steps=30, output=str(out)), progress=False)
    finally:
        alive.kill()
        alive.wait()
    assert not leftover.exists() and busy.is_dir()
    assert f"removed {leftover}, left by a killed process" in capsys.readouterr().err
    assert DatasetReader(out).num_episodes == 1


def test_the_next_merge_removes_what_a_killed_one_left(tmp_path: Path) -> None:
    src = tiny_dataset(tmp_path / "src")
    out = tmp_path / "merged"
    leftover = killed_writer(out)  # the same .NAME.tmp-PID folder a merge writes
    merge(MergeConfig(sources=[str(src)], output=str(out)), progress=False)
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "src"]


# ----------------------------------------------------------------------------- 3. NaN / inf
def test_nonfinite_stats_are_reported_and_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tiny_dataset(tmp_path / "ds")
    path = root / "meta/stats.json"
    stats = json.loads(path.read_text())
    stats["observation.state"]["mean"][1] = float("nan")  # written as NaN
    stats["action"]["std"] = [None, 1.0]  # null: what a NaN becomes through json_ready
    path.write_text(json.dumps(stats))
    problems = validate_dataset(root)
    assert f"{path}: stats['observation.state']['mean'] holds 1 NaN/inf/null value(s)" in (
        "\n".join(problems)
    )
    assert f"{path}: stats['action']['std'] holds 1 NaN/inf/null value(s)" in "\n".join(problems)
    assert validate_main([str(root)]) == 1
    assert f"{root}: valid" not in capsys.readouterr().out

    # BC reads the stats with ds.stats(): a NaN std would silently make every input NaN
    ds = DatasetReader(root)
    with pytest.raises(
        LeRobotFormatError,
        match=re.escape(f"{path}: stats['observation.state']['mean'] holds 1 NaN"),
    ):
        ds.stats()
    assert set(ds.stats(["episode_index"])) == {"episode_index"}  # other features still read

    # v2.1: per-episode stats in episodes_stats.jsonl
    v21 = tmp_path / "v21"
    build(v21, "v2.1", Spec(lengths=[4, 5]))
    jsonl = v21 / "meta/episodes_stats.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    rows[1]["stats"]["action"]["max"][0] = float("inf")
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    where = f"{jsonl} (episode 1): stats['action']['max'] holds 1 NaN/inf/null value(s)"
    assert where in "\n".join(validate_dataset(v21))
    with pytest.raises(LeRobotFormatError, match=re.escape(where)):
        DatasetReader(v21).stats()


def put_inf(path: Path, key: str, row: int) -> None:
    """Rewrite the data file with one inf in column ``key`` at ``row`` (schema kept)."""
    table = pq.read_table(path)
    col = table.column(key).combine_chunks()
    width = col.type.list_size
    flat = col.flatten().to_numpy().copy()
    flat[row * width + 1] = np.inf
    i = table.schema.get_field_index(key)
    values = pa.FixedSizeListArray.from_arrays(pa.array(flat), width)
    pq.write_table(table.set_column(i, table.schema.field(i), values), path)


def test_nonfinite_data_values_are_reported_and_not_merged(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "ds")
    path = root / DATA_FILE
    put_inf(path, "action", row=3)
    problems = validate_dataset(root)
    assert (
        f"{path}: feature 'action' holds NaN/inf in 1 row(s) (first at row 3 of the file); "
        "clean or drop those frames"
    ) in problems
    with pytest.raises(
        LeRobotFormatError, match=re.escape(f"{path}: feature 'action' holds NaN/inf in 1 row(s)")
    ):
        merge(MergeConfig(sources=[str(root)], output=str(tmp_path / "m")), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


# ----------------------------------------------------------------------------- 4. parquet
@pytest.mark.parametrize("damage", ["zero-byte", "truncated"])
def test_a_damaged_data_file_is_named_by_every_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    root = tiny_dataset(tmp_path / "ds")
    path = root / DATA_FILE
    raw = path.read_bytes()
    path.write_bytes(b"" if damage == "zero-byte" else raw[: len(raw) // 2])
    named = f"{path} is not a readable parquet file ("
    with pytest.raises(LeRobotFormatError, match=re.escape(named)):
        DatasetReader(root).load_columns(["observation.state", "action"])  # BC, RL --demos
    with pytest.raises(LeRobotFormatError, match=re.escape(named)):
        merge(MergeConfig(sources=[str(root)], output=str(tmp_path / "m")), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert merge_main(["--sources", str(root), "--output", str(tmp_path / "m")]) == 1
    assert named in capsys.readouterr().err
    problems = validate_dataset(root)  # a problem, not a traceback
    assert sum(p.startswith(named) for p in problems) == 1, problems
    assert validate_main([str(root)]) == 1
    assert named in capsys.readouterr().out


def test_damaged_metadata_parquet_is_named_by_the_validator(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "ds")
    episodes = root / "meta/episodes/chunk-000/file-000.parquet"
    episodes.write_bytes(b"")
    assert validate_dataset(root)[0].startswith(f"{episodes} is not a readable parquet file")
    root = tiny_dataset(tmp_path / "ds2")
    tasks = root / "meta/tasks.parquet"
    tasks.write_bytes(tasks.read_bytes()[:-10])
    assert validate_dataset(root)[0].startswith(f"{tasks} is not a readable parquet file")


def test_float64_declared_over_float32_data_is_reported(tmp_path: Path) -> None:
    root = tiny_dataset(tmp_path / "ds")
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["features"]["action"]["dtype"] = "float64"
    info_path.write_text(json.dumps(info))
    problems = "\n".join(validate_dataset(root))
    assert (
        f"{root / DATA_FILE}: feature 'action' is declared float64 but its parquet values are "
        "float32" in problems
    )


def test_a_file_given_as_a_dataset_is_called_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "file-000.parquet"
    f.write_bytes(b"PAR1")
    said = f"{f} is a file, not a dataset folder; pass the folder that holds meta/info.json"
    assert validate_dataset(f) == [said]
    assert validate_main([str(f)]) == 1
    assert said in capsys.readouterr().out
    with pytest.raises(NotADirectoryError, match=re.escape(said)):
        DatasetReader(f)


# ----------------------------------------------------------------------------- 5. bounds
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"episodes": 10**20}, "episodes must be in [1, 1e7] (the frames are held in memory"),
        (
            {"noise": float("nan")},
            "noise must be in [0, 10] (std of the noise on actions clipped to [-1, 1]), got nan",
        ),
        ({"noise": float("inf")}, "noise must be in [0, 10]"),
        ({"noise": 11.0}, "noise must be in [0, 10]"),
        ({"max_steps": 10**20}, "max_steps must be in [1, 100000] (5000 s of driving"),
        ({"workers": 100_000}, "workers must be in [1, 256] (one process each)"),
        ({"chunk_size": 10**20}, "chunk_size must be in [1, 4096], got"),
        ({"n_rays": 10**20}, "n_rays must be in [1, 1024]"),
        ({"preview": []}, "preview must be 1 to 64 increasing distances in metres"),
        (
            {"preview": [30.0, 15.0]},
            "increasing distances in metres (e.g. 5 15 30 50), got [30.0, 15.0]",
        ),
        ({"preview": [-5.0]}, "got [-5.0]"),
        ({"seed": -1}, "seed must be in [0, 2^32), got -1"),
        ({"seed": 2**32}, f"seed must be in [0, 2^32), got {2**32}"),
        ({"output": ""}, "output must name a dataset folder"),
    ],
)
def test_collect_options_are_bounded(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        CollectConfig(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pad_to": 10**20}, "pad_to must be in [1, 65536] (columns of a padded vector feature"),
        (
            {"stats_max_mb": float("nan")},
            "stats_max_mb must be in [0, 1048576] (1 TB of merged columns held in memory), got nan",
        ),
        ({"stats_max_mb": float("inf")}, "stats_max_mb must be in [0, 1048576]"),
        ({"stats_max_mb": 1e7}, "stats_max_mb must be in [0, 1048576]"),
        ({"data_files_size_in_mb": float("inf")}, "data_files_size_in_mb must be in (0, 1048576]"),
        ({"data_files_size_in_mb": 1e9}, "data_files_size_in_mb must be in (0, 1048576] (1 TB)"),
        ({"chunks_size": 10**20}, "chunks_size must be in [1, 1e6]"),
        ({"workers": 100_000}, "workers must be in [1, 256], got 100000"),
    ],
)
def test_merge_options_are_bounded(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        MergeConfig(**options)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--episodes", "20000000"], "--episodes: episodes must be in [1, 1e7]"),
        (["--episodes", HUGE], "--episodes"),  # argparse's int() takes 1e20 written out
        (["--noise", "nan"], "--noise"),
        (["--noise", "inf"], "--noise"),
        (["--max-steps", "1000000"], "--max-steps: max_steps must be in [1, 100000]"),
    ],
)
def test_collect_cli_refuses_out_of_range_flags_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as e:
        collect_main([*argv, "--output", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_merge_cli_refuses_a_huge_pad_to_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tiny_dataset(tmp_path / "src")
    for value, message in [
        ("100000", "--pad-to: pad_to must be in [1, 65536]"),
        (HUGE, "--pad-to"),
    ]:
        with pytest.raises(SystemExit) as e:
            merge_main(["--sources", str(src), "--pad-to", value, "--output", str(tmp_path / "x")])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# ----------------------------------------------------------------------------- 6. Ctrl-C
def test_ctrl_c_stops_the_workers_quietly_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "demos"
    cmd = [sys.executable, "-m", "rlkit.cli.collect_demonstrations", "--output", str(out)]
    cmd += ["--episodes", "400", "--workers", "2", "--chunk-size", "1", "--max-steps", "400"]
    # a session of its own, so SIGINT can go to the whole process group as a terminal's
    # Ctrl-C does (the workers and the forkserver get it too)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=python_env(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        # the writer's temp folder appears with the first finished chunk: the pool is busy
        while not list(tmp_path.glob(".demos.tmp-*")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "collection never started"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "Traceback" not in err, err
    assert "KeyboardInterrupt" not in err, err
    said = [line for line in err.splitlines() if line.strip() and "collect:" not in line]
    assert len(said) == 1 and "interrupted" in said[0], err  # one line besides the bar
    assert proc.returncode == 130
    assert list(tmp_path.iterdir()) == []  # no dataset, no temp folder
    assert not list(Path("/dev/shm").glob(f"rlkit_collect_{proc.pid}_*"))  # no result blocks
