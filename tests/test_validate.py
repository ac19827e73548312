"""Tests for rlkit.lerobot.validate and rlkit-validate-lerobot: real datasets broken on purpose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import VIDEO_KEY, Spec, build, video_frames, write_mp4

from rlkit.cli.validate_lerobot import main as validate_main
from rlkit.lerobot import write_dataset
from rlkit.lerobot.validate import validate_dataset
from rlkit.lerobot.video import video_duration_s


def _problems(root: Path) -> str:
    return "\n".join(validate_dataset(root))


def test_valid_datasets_have_no_problems(tmp_path: Path) -> None:
    n = 12
    data = {
        "observation.state": np.zeros((n, 3), dtype=np.float32),
        "episode_index": np.repeat([0, 1], 6),
    }
    assert validate_dataset(write_dataset(tmp_path / "w", data, fps=10)) == []
    build(tmp_path / "v21", "v2.1", Spec(lengths=[4, 5], image_shape=[8, 8, 3]))
    assert validate_dataset(tmp_path / "v21") == []
    assert validate_dataset(tmp_path / "nowhere")[0].startswith("dataset folder")


def test_parquet_types_checked_against_features(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    build(root, "v3.0", Spec(lengths=[4, 5, 6]))
    path = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    action = pa.FixedSizeListArray.from_arrays(np.zeros(table.num_rows * 3, np.float32), 3)
    table = table.set_column(table.schema.get_field_index("action"), "action", action)
    table = table.set_column(
        table.schema.get_field_index("timestamp"), "timestamp", pa.array(np.zeros(4, np.int64))
    )
    table = table.append_column("extra", pa.array(np.zeros(4)))
    pq.write_table(table, path)
    problems = _problems(root)
    assert "'action' declares shape [2] but its parquet column is fixed_size_list" in problems
    assert "'timestamp' is declared float32 but its parquet values are int64" in problems
    assert "columns ['extra'] not declared" in problems
    assert str(path) in problems


def test_episode_tasks_and_per_episode_counts(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    build(root, "v2.1", Spec(lengths=[4, 6], tasks=["a", "b"], episode_tasks=[[0], [0, 1]]))
    assert validate_dataset(root) == []
    eps = [json.loads(x) for x in (root / "meta/episodes.jsonl").read_text().splitlines()]
    eps[1]["tasks"] = ["a"]  # rows of episode 1 also use task "b"
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in eps))
    stats = [json.loads(x) for x in (root / "meta/episodes_stats.jsonl").read_text().splitlines()]
    stats[0]["stats"]["action"]["count"] = [99]
    (root / "meta/episodes_stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats))
    problems = _problems(root)
    assert "episode 1 lists tasks ['a'] but its rows have task_index values meaning ['a', 'b']" in (
        problems
    )
    assert "per-episode stats of 'action': episode 0 has count 99 but length 4" in problems


def test_video_presence_and_length(tmp_path: Path) -> None:
    pytest.importorskip("av")
    v21, v3 = tmp_path / "v21", tmp_path / "v3"
    build(v21, "v2.1", Spec(lengths=[5, 8], video=True))
    build(v3, "v3.0", Spec(lengths=[5, 8, 4, 6], video=True))
    assert validate_dataset(v21) == [] and validate_dataset(v3) == []
    mp4 = v21 / f"videos/chunk-000/{VIDEO_KEY}/episode_000001.mp4"
    assert video_duration_s(mp4) == pytest.approx(0.8)
    write_mp4(mp4, video_frames(0, 1, 5), 10)  # 5 frames for an 8-frame episode
    (v21 / f"videos/chunk-000/{VIDEO_KEY}/episode_000000.mp4").unlink()
    problems = _problems(v21)
    assert f"video {mp4} lasts 0.500s but {VIDEO_KEY} episode 1 needs a frame at 0.700s" in problems
    assert "episode_000000.mp4 is referenced but does not exist" in problems

    # v3.0: an episode whose to_timestamp points past the end of its (shared) mp4
    ep_path = v3 / "meta/episodes/chunk-000/file-000.parquet"
    eps = pd.read_parquet(ep_path)
    col = f"videos/{VIDEO_KEY}"
    eps.loc[3, f"{col}/from_timestamp"] += 1.0
    eps.loc[3, f"{col}/to_timestamp"] += 1.0
    eps.to_parquet(ep_path)
    problems = _problems(v3)
    assert (
        "file-001.mp4 lasts 1.000s but observation.images.cam episode 3 needs a frame" in problems
    )


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    build(good, "v3.0", Spec(lengths=[3, 4]))
    shutil.copytree(good, bad)
    info = json.loads((bad / "meta/info.json").read_text())
    info["total_frames"] = 99
    (bad / "meta/info.json").write_text(json.dumps(info))
    assert validate_main([str(good)]) == 0
    assert f"{good}: valid" in capsys.readouterr().out
    assert validate_main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and "total_frames is 99 but the dataset has 7" in out
    assert validate_main([str(good), "--workers", "1"]) == 0
    capsys.readouterr()
    for argv, message in (
        ([str(good), "--workers", "0"], "workers must be in [1, 256], got 0"),
        ([str(good), "--workers", "100000"], "workers must be in [1, 256], got 100000"),
        ([], "required: datasets"),
    ):
        with pytest.raises(SystemExit) as exc:
            validate_main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err
