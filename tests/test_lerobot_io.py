"""Tests for rlkit.lerobot: v3.0 writer, v2.x/v3.0 reader, statistics. Real files, no mocks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import INDEX_KEYS, Spec, build

from rlkit.lerobot import (
    DatasetReader,
    DatasetWriter,
    LeRobotFormatError,
    aggregate_stats,
    compute_stats,
    validate_dataset,
    write_dataset,
)
from rlkit.lerobot.stats import episode_stats_arrays

FPS = 20
STATE_DIM = 5
LENGTHS = [7, 12, 7, 3, 9]  # equal lengths not adjacent: exercises both stats code paths
TASKS = ["pick the cube", "drive the lap"]
QUANTILE_KEYS = ("q01", "q10", "q50", "q90", "q99")


def make_data(lengths: list[int] = LENGTHS, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    episode_index = np.repeat(np.arange(len(lengths)), lengths).astype(np.int64)
    done = np.zeros(n, dtype=bool)
    done[np.cumsum(lengths) - 1] = True
    return {
        "observation.state": rng.standard_normal((n, STATE_DIM)).astype(np.float32),
        "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "next.reward": rng.standard_normal(n).astype(np.float32),
        "next.done": done,
        "episode_index": episode_index,
        "task_index": (episode_index % 2).astype(np.int64),
    }


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    data = make_data()
    root = write_dataset(
        tmp_path / "ds",
        data,
        fps=FPS,
        tasks=TASKS,
        feature_names={"action": ["steer", "throttle"]},
        robot_type="racer",
    )
    return root, data


def bounds_of(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


# ----------------------------------------------------------------------------- round trip
def test_round_trip_is_exact(written: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, data = written
    ds = DatasetReader(root)
    assert (ds.version, ds.fps, ds.num_episodes, ds.num_frames) == ("v3.0", FPS, 5, sum(LENGTHS))
    assert ds.tasks == TASKS
    cols = ds.load_columns()
    for key, arr in data.items():
        assert cols[key].dtype == arr.dtype, key
        assert cols[key].shape == arr.shape, key
        np.testing.assert_array_equal(cols[key], arr, err_msg=key)
    frame_index = np.concatenate([np.arange(n) for n in LENGTHS])
    np.testing.assert_array_equal(cols["frame_index"], frame_index)
    np.testing.assert_array_equal(cols["index"], np.arange(sum(LENGTHS)))
    assert cols["timestamp"].dtype == np.float32
    np.testing.assert_array_equal(cols["timestamp"], (frame_index / FPS).astype(np.float32))
    eps = ds.episodes
    np.testing.assert_array_equal(eps["dataset_from_index"], bounds_of(LENGTHS)[:-1])
    np.testing.assert_array_equal(eps["dataset_to_index"], bounds_of(LENGTHS)[1:])
    assert [list(t) for t in eps["tasks"]] == [[TASKS[i % 2]] for i in range(5)]


def test_load_subset_and_missing_key_suggests_close_match(
    written: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, data = written
    ds = DatasetReader(root)
    cols = ds.load_columns(["action"])
    assert list(cols) == ["action"]
    with pytest.raises(LeRobotFormatError, match=r"did you mean 'observation\.state'") as err:
        ds.load_columns(["observation.stat"])
    assert "observation.stat" in str(err.value) and "available" in str(err.value)


def test_open_missing_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        DatasetReader(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="info.json"):
        DatasetReader(tmp_path / "empty")


# ----------------------------------------------------------------------------- on-disk format
def test_info_json_matches_v3_format(written: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = written
    info = json.loads((root / "meta/info.json").read_text())
    assert set(info) == {
        "codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks",
        "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits",
        "data_path", "video_path", "features",
    }  # fmt: skip
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (5, 38, 2)
    assert info["splits"] == {"train": "0:5"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] is None and info["robot_type"] == "racer"
    feats = info["features"]
    assert feats["observation.state"] == {"dtype": "float32", "shape": [5], "names": None}
    assert feats["action"]["names"] == ["steer", "throttle"]
    assert feats["next.done"] == {"dtype": "bool", "shape": [1], "names": None}
    assert feats["timestamp"] == {"dtype": "float32", "shape": [1], "names": None}
    for key in INDEX_KEYS[1:]:
        assert feats[key] == {"dtype": "int64", "shape": [1], "names": None}
    assert list(feats)[-5:] == list(INDEX_KEYS)


def test_data_parquet_schema_and_row_groups(written: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = written
    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    assert [f.relative_to(root).as_posix() for f in files] == ["data/chunk-000/file-000.parquet"]
    pf = pq.ParquetFile(files[0])
    schema = pf.schema_arrow
    state_type = schema.field("observation.state").type
    assert pa.types.is_fixed_size_list(state_type) and state_type.list_size == STATE_DIM
    assert state_type.value_type == pa.float32()
    assert schema.field("next.reward").type == pa.float32()
    assert schema.field("next.done").type == pa.bool_()
    assert schema.field("index").type == pa.int64()
    hf = json.loads(schema.metadata[b"huggingface"])
    assert hf["info"]["features"]["observation.state"] == {
        "feature": {"dtype": "float32", "_type": "Value"},
        "length": STATE_DIM,
        "_type": "Sequence",
    }
    assert hf["info"]["features"]["frame_index"] == {"dtype": "int64", "_type": "Value"}
    rg_rows = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    assert rg_rows == LENGTHS  # one row group per episode


def test_episodes_tasks_and_stats_files(written: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, data = written
    ep_path = root / "meta/episodes/chunk-000/file-000.parquet"
    schema = pq.read_schema(ep_path)
    eps = pd.read_parquet(ep_path)
    for col in ("data/chunk_index", "data/file_index", "meta/episodes/chunk_index"):
        assert (eps[col] == 0).all()
    assert schema.field("episode_index").type == pa.int64()
    assert schema.field("tasks").type == pa.list_(pa.string())
    assert schema.field("stats/observation.state/mean").type == pa.list_(pa.float64())
    assert schema.field("stats/next.reward/count").type == pa.list_(pa.int64())
    np.testing.assert_array_equal(eps["length"], LENGTHS)
    np.testing.assert_array_equal(eps["dataset_to_index"] - eps["dataset_from_index"], LENGTHS)
    b = bounds_of(LENGTHS)
    features = [*data, "timestamp", "frame_index", "index"]
    stat_names = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)
    for key in features:
        for stat in stat_names:
            assert f"stats/{key}/{stat}" in eps.columns, (key, stat)
    ep3 = compute_stats(data["observation.state"][b[3] : b[4]])
    for stat, value in ep3.items():
        np.testing.assert_allclose(eps[f"stats/observation.state/{stat}"][3], value, rtol=1e-12)

    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert tasks.index.name == "task" and list(tasks.index) == TASKS
    assert tasks["task_index"].dtype == np.int64 and list(tasks["task_index"]) == [0, 1]

    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats) == set(features)
    assert np.shape(stats["observation.state"]["q99"]) == (STATE_DIM,)
    assert stats["next.reward"]["count"] == [38] and np.shape(stats["next.reward"]["min"]) == (1,)
    full = compute_stats(data["action"])
    for stat, value in full.items():
        np.testing.assert_allclose(stats["action"][stat], value, rtol=1e-12)
    assert stats["episode_index"]["max"] == [4.0]
    read = DatasetReader(root).stats()
    assert read["action"]["count"].dtype == np.int64
    np.testing.assert_allclose(read["action"]["std"], full["std"])


# ----------------------------------------------------------------------------- validation
def test_validate_clean_and_corrupted(tmp_path: Path) -> None:
    data = make_data(lengths=[30] * 6)
    root = write_dataset(tmp_path / "ds", data, fps=FPS, tasks=TASKS, data_files_size_in_mb=0.004)
    n_files = len(list((root / "data").glob("*/*.parquet")))
    assert n_files >= 3
    assert validate_dataset(root) == []

    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    info = json.loads((bad / "meta/info.json").read_text())
    info["total_frames"] += 5
    info["splits"] = {"train": "0:3"}
    (bad / "meta/info.json").write_text(json.dumps(info))
    stats = json.loads((bad / "meta/stats.json").read_text())
    stats["action"]["count"] = [1, 2]
    (bad / "meta/stats.json").write_text(json.dumps(stats))
    last = sorted((bad / "data").glob("*/*.parquet"))[-1]
    last.unlink()
    problems = "\n".join(validate_dataset(bad))
    assert "total_frames is 185 but the dataset has 180" in problems
    assert "do not cover episodes" in problems
    assert f"data file {last} is referenced but does not exist" in problems
    assert "stats['action']['count'] has shape (2,), expected (1,)" in problems

    # frame-level corruption: a timestamp jump and a wrong global index inside one file
    bad2 = tmp_path / "bad2"
    shutil.copytree(root, bad2)
    first = sorted((bad2 / "data").glob("*/*.parquet"))[0]
    table = pq.read_table(first)
    ts = table.column("timestamp").to_numpy().copy()
    ts[4] += 0.01
    idx = table.column("index").to_numpy().copy()
    idx[2] = 99
    table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", pa.array(ts))
    table = table.set_column(table.schema.get_field_index("index"), "index", pa.array(idx))
    pq.write_table(table, first)
    problems = "\n".join(validate_dataset(bad2))
    assert "timestamp must step by 1/fps" in problems and "first at row 4" in problems
    assert "index must equal the global row position: row 2" in problems


# ----------------------------------------------------------------------------- statistics
def test_compute_stats_shapes_and_dtypes() -> None:
    s = compute_stats(np.array([True, False, True, True]))
    assert s["mean"].shape == (1,) and s["mean"].dtype == np.float64
    assert s["count"].dtype == np.int64 and s["count"].tolist() == [4]
    assert s["mean"][0] == pytest.approx(0.75)
    x = np.random.default_rng(1).standard_normal((101, 3)).astype(np.float32)
    s = compute_stats(x)
    for key in QUANTILE_KEYS:
        assert s[key].shape == (3,)
    np.testing.assert_allclose(s["q10"], np.quantile(x.astype(np.float64), 0.1, axis=0))
    np.testing.assert_allclose(s["std"], x.astype(np.float64).std(axis=0), rtol=1e-12)
    assert "q50" not in compute_stats(x, quantiles=False)


@pytest.mark.parametrize("quantiles", [True, False])
def test_episode_stats_arrays_match_per_episode(quantiles: bool) -> None:
    x = np.random.default_rng(2).standard_normal((sum(LENGTHS), 4))
    b = bounds_of(LENGTHS)
    per_ep = episode_stats_arrays(x, b, quantiles=quantiles)
    assert {len(v) for v in per_ep.values()} == {len(LENGTHS)}
    for i in range(len(LENGTHS)):
        ref = compute_stats(x[b[i] : b[i + 1]], quantiles=quantiles)
        assert set(per_ep) == set(ref)
        for key in ref:
            np.testing.assert_allclose(per_ep[key][i], ref[key], rtol=1e-12, err_msg=f"{i} {key}")
    with pytest.raises(ValueError, match="strictly increasing"):
        episode_stats_arrays(x, np.array([0, 5, 5, len(x)]))


def test_aggregate_stats_pools_exactly_with_between_group_term() -> None:
    rng = np.random.default_rng(3)
    # group means differ a lot, so dropping the between-group term would shrink std badly
    groups = [rng.normal(loc, 0.5, (n, 3)) for loc, n in ((-5.0, 40), (0.0, 7), (8.0, 100))]
    pooled = aggregate_stats([compute_stats(g) for g in groups])
    exact = compute_stats(np.concatenate(groups))
    for key in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(pooled[key], exact[key], rtol=1e-10, err_msg=key)
    assert pooled["count"].tolist() == [147] and pooled["count"].dtype == np.int64
    assert np.all(pooled["std"] > 3.0)  # within-group std alone is 0.5
    assert np.all(pooled["q01"] <= exact["q01"]) and np.all(pooled["q99"] >= exact["q99"])

    # image-shaped stats (3, 1, 1) keep their shape
    img = [
        {"mean": np.full((3, 1, 1), m), "std": np.full((3, 1, 1), 0.1), "count": np.array([c])}
        for m, c in ((0.2, 10), (0.6, 30))
    ]
    out = aggregate_stats(img)
    assert out["mean"].shape == (3, 1, 1) and out["count"].tolist() == [40]
    np.testing.assert_allclose(out["mean"], 0.5)
    np.testing.assert_allclose(out["std"], np.sqrt(0.01 + (10 * 0.09 + 30 * 0.01) / 40))


# ----------------------------------------------------------------------------- file rollover
def test_rollover_into_files_and_chunks_round_trips(tmp_path: Path) -> None:
    lengths = [25, 40, 10, 33, 20, 28, 15]
    data = make_data(lengths=lengths, seed=4)
    root = write_dataset(
        tmp_path / "ds", data, fps=FPS, tasks=TASKS, data_files_size_in_mb=0.003, chunks_size=2
    )
    files = sorted(p.relative_to(root).as_posix() for p in (root / "data").glob("*/*.parquet"))
    assert len(files) >= 4
    assert files[:3] == [
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
        "data/chunk-001/file-000.parquet",
    ]
    ds = DatasetReader(root)
    assert validate_dataset(root) == []
    eps = ds.episodes
    for _, ep in eps.iterrows():  # episodes never span files
        path = (
            root
            / f"data/chunk-{ep['data/chunk_index']:03d}/file-{ep['data/file_index']:03d}.parquet"
        )
        ep_rows = pq.read_table(path, columns=["episode_index"]).column(0).to_numpy()
        assert (ep_rows == ep["episode_index"]).sum() == ep["length"]
    cols = ds.load_columns()
    for key, arr in data.items():
        np.testing.assert_array_equal(cols[key], arr, err_msg=key)


# ----------------------------------------------------------------------------- v2.1 / v2.0 input
def test_reads_hand_built_v21(tmp_path: Path) -> None:
    lengths = [6, 11, 4]
    root = tmp_path / "v21"  # pandas-written list<double> vectors, one parquet per episode
    names = {"observation.state": {"motors": ["a", "b", "c"]}, "action": [["x", "y"]]}
    expected = build(root, "v2.1", Spec(lengths=lengths, names=names, seed=5))["cols"]
    assert pq.read_schema(root / "data/chunk-000/episode_000000.parquet").field(
        "observation.state"
    ).type == pa.list_(pa.float64())
    ds = DatasetReader(root)
    assert (ds.version, ds.fps, ds.num_episodes, ds.num_frames) == ("v2.1", 10, 3, 21)
    assert ds.tasks == ["stack"]
    np.testing.assert_array_equal(ds.episodes["dataset_from_index"], [0, 6, 17])
    np.testing.assert_array_equal(ds.episodes["dataset_to_index"], [6, 17, 21])
    cols = ds.load_columns(["observation.state", "action", "episode_index"])
    assert cols["observation.state"].shape == (21, 3)
    assert cols["observation.state"].dtype == np.float32  # cast to the declared dtype
    np.testing.assert_array_equal(cols["observation.state"], expected["observation.state"])
    np.testing.assert_array_equal(cols["action"], expected["action"])
    np.testing.assert_array_equal(cols["episode_index"], np.repeat([0, 1, 2], lengths))
    stats = ds.stats()  # pooled from episodes_stats.jsonl
    exact = compute_stats(expected["observation.state"])
    for key in ("mean", "std", "min", "max", "count"):
        np.testing.assert_allclose(stats["observation.state"][key], exact[key], rtol=1e-10)
    assert validate_dataset(root) == []

    # v2.0 flavour: no episodes_stats.jsonl, no stats.json -> stats computed from the data
    (root / "meta/episodes_stats.jsonl").unlink()
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v2.0"
    (root / "meta/info.json").write_text(json.dumps(info))
    ds = DatasetReader(root)
    assert ds.version == "v2.0"
    np.testing.assert_allclose(ds.stats()["action"]["q50"], np.median(expected["action"], 0))


def test_reads_v3_tasks_stored_as_index_level_column(
    written: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, _ = written
    table = pa.table({"task_index": [1, 0], "__index_level_0__": [TASKS[1], TASKS[0]]})
    pq.write_table(table, root / "meta/tasks.parquet")  # no pandas metadata: plain column
    assert DatasetReader(root).tasks == TASKS


# ----------------------------------------------------------------------------- atomic writes
def test_existing_output_refused_then_replaced_with_overwrite(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", make_data(), fps=FPS, tasks=TASKS)
    with pytest.raises(FileExistsError, match="exists; pass --overwrite or choose another"):
        write_dataset(root, make_data(), fps=FPS, tasks=TASKS)
    new = make_data(lengths=[4, 4], seed=9)
    new.pop("task_index")
    write_dataset(root, new, fps=FPS, overwrite=True)
    ds = DatasetReader(root)
    assert (ds.num_episodes, ds.tasks) == (2, ["default"])
    np.testing.assert_array_equal(ds.load_columns(["action"])["action"], new["action"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp / old folders left


def _breakers() -> dict[str, tuple[dict[str, np.ndarray], str]]:
    cases: dict[str, tuple[dict[str, np.ndarray], str]] = {}
    d = make_data()
    d["episode_index"] = d["episode_index"].copy()
    d["episode_index"][8] = 0  # episode 1 interrupted by a frame of episode 0
    cases["non_contiguous"] = (d, "episode_index")
    d = make_data()
    d["episode_index"] = np.where(d["episode_index"] >= 2, d["episode_index"] + 1, 0)
    cases["gap"] = (d, "episode_index")
    d = make_data()
    d["observation.state"] = d["observation.state"].copy()
    d["observation.state"][5, 2] = np.nan
    cases["nan"] = (d, "observation.state")
    d = make_data()
    d["action"] = d["action"][:-1]
    cases["length_mismatch"] = (d, "action")
    d = make_data()
    d["frame_index"] = np.arange(sum(LENGTHS))
    cases["bad_frame_index"] = (d, "frame_index")
    d = make_data()
    d["task_index"] = d["task_index"] + 1
    cases["unknown_task"] = (d, "task_index")
    return cases


@pytest.mark.parametrize("case", list(_breakers()))
def test_invalid_input_raises_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    data, column = _breakers()[case]
    with pytest.raises(LeRobotFormatError, match=column):
        write_dataset(tmp_path / "out", data, fps=FPS, tasks=TASKS)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- streaming writer
def _batches(data: dict[str, np.ndarray], cuts: list[int]) -> list[dict[str, np.ndarray]]:
    """Split frame arrays at episode boundaries ``cuts`` (episode numbers)."""
    ep = data["episode_index"]
    rows = [0, *(int(np.searchsorted(ep, c)) for c in cuts), len(ep)]
    return [{k: v[a:b] for k, v in data.items()} for a, b in zip(rows, rows[1:], strict=False)]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_streamed_batches_write_the_same_bytes_as_one_call(tmp_path: Path) -> None:
    data = make_data(lengths=[7, 12, 7, 3, 9, 4, 11])
    opts = {"fps": FPS, "tasks": TASKS, "data_files_size_in_mb": 0.0008, "chunks_size": 2}
    whole = write_dataset(tmp_path / "whole", data, **opts)
    with DatasetWriter(tmp_path / "streamed", **opts) as w:
        for batch in _batches(data, [2, 3, 6]):
            w.add(batch)
        assert (w.num_episodes, w.num_frames) == (7, len(data["episode_index"]))
        streamed = w.close()
    assert len(list((whole / "data").glob("chunk-*"))) > 2  # rolled over files and chunks
    assert _tree(whole) == _tree(streamed)


def test_streamed_batch_errors_name_the_problem_and_abort_leaves_nothing(tmp_path: Path) -> None:
    data = make_data()
    first, second = _batches(data, [2])
    with DatasetWriter(tmp_path / "out", fps=FPS, tasks=TASKS) as w:
        w.add(first)
        with pytest.raises(LeRobotFormatError, match="sorted from 2"):
            w.add(first)  # episode_index must continue at 2
        wrong = dict(second, action=second["action"].astype(np.float64))
        with pytest.raises(LeRobotFormatError, match="'action'.*first batch"):
            w.add(wrong)
        w.add(second)  # a rejected batch leaves the writer usable
        w.abort()
    assert list(tmp_path.iterdir()) == []
    with (
        DatasetWriter(tmp_path / "empty", fps=FPS) as w,
        pytest.raises(LeRobotFormatError, match="no episodes"),
    ):
        w.close()
    with (
        pytest.raises(ZeroDivisionError),
        DatasetWriter(tmp_path / "out", fps=FPS, tasks=TASKS) as w,
    ):
        w.add(first)
        raise ZeroDivisionError  # an exception inside the block discards everything
    assert list(tmp_path.iterdir()) == []


def test_a_failed_background_write_surfaces_and_leaves_nothing(tmp_path: Path) -> None:
    """Frames are encoded in a background thread: a write that fails there (here a folder
    squats on the second data file's name) is raised by the next call, not lost."""
    data = make_data(lengths=[7, 12, 7, 3])
    root = tmp_path / "out"
    w = DatasetWriter(root, fps=FPS, tasks=TASKS, data_files_size_in_mb=0.0008)
    first, second = _batches(data, [1])
    w.add(first)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    (tmp / "data/chunk-000/file-001.parquet").mkdir(parents=True)
    w.add(second)  # episode 1 goes to file-001: its write fails in the background
    with pytest.raises(OSError):
        w.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="already closed"):
        w.add(first)


def test_precomputed_episode_stats_are_used_and_checked(tmp_path: Path) -> None:
    data = make_data()
    bounds = bounds_of(LENGTHS)
    given = {"action": episode_stats_arrays(data["action"], bounds)}
    a = write_dataset(tmp_path / "a", data, fps=FPS, tasks=TASKS)
    b = write_dataset(tmp_path / "b", data, fps=FPS, tasks=TASKS, episode_stats=given)
    assert _tree(a) == _tree(b)
    # A different (but well-formed) value is written as given: the writer trusts the shape
    # checks below, not a recomputation.
    shifted = {"action": {**given["action"], "mean": given["action"]["mean"] + 1.0}}
    c = write_dataset(tmp_path / "c", data, fps=FPS, tasks=TASKS, episode_stats=shifted)
    got = pq.read_table(c / "meta/episodes/chunk-000/file-000.parquet")["stats/action/mean"]
    np.testing.assert_allclose(
        np.stack(got.to_numpy(zero_copy_only=False)), shifted["action"]["mean"]
    )
    bad = {
        "unknown column": ({"nope": given["action"]}, "no such column"),
        "missing stat": (
            {"action": {k: v for k, v in given["action"].items() if k != "q50"}},
            "exactly the stats",
        ),
        "wrong shape": (
            {"action": {**given["action"], "min": given["action"]["min"][:, :1]}},
            "shape",
        ),
        "wrong count": (
            {"action": {**given["action"], "count": given["action"]["count"] + 1}},
            "episode lengths",
        ),
    }
    for name, (stats, message) in bad.items():
        with pytest.raises(LeRobotFormatError, match=message):
            write_dataset(tmp_path / name, data, fps=FPS, tasks=TASKS, episode_stats=stats)
        assert not (tmp_path / name).exists()


def test_compute_stats_of_parts_equals_stats_of_the_concatenation() -> None:
    rng = np.random.default_rng(7)
    parts = [rng.standard_normal((n, 3)).astype(np.float32) for n in (5, 40, 1, 17)]
    whole = np.concatenate(parts)
    got, ref = compute_stats(parts), compute_stats(whole)
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    # float32 data is sorted as float32; the stats are still float64 and exact.
    for q, name in ((0.01, "q01"), (0.5, "q50"), (0.99, "q99")):
        np.testing.assert_allclose(ref[name], np.quantile(whole.astype(np.float64), q, axis=0))
    np.testing.assert_allclose(ref["mean"], whole.astype(np.float64).mean(axis=0), rtol=1e-12)
    with pytest.raises(ValueError, match="same trailing shape"):
        compute_stats([parts[0], parts[1][:, :2]])


def test_abort_waits_for_a_writer_thread_its_pool_never_recorded(tmp_path: Path) -> None:
    # Ctrl-C inside ThreadPoolExecutor.submit can interrupt Thread.start after the thread has
    # begun: the pool does not know the thread, which may still write the last batch into
    # the parquet writer that abort() closes (a SIGSEGV in a core dump of an interrupted
    # collection). abort() waits for every thread named as its pool's.
    import threading
    import time

    first = _batches(make_data(), [2])[0]
    finished = []
    with DatasetWriter(tmp_path / "out", fps=FPS, tasks=TASKS) as w:
        w.add(first)
        late = threading.Thread(
            target=lambda: (time.sleep(0.3), finished.append(True)), name=f"{w._threads}_9"
        )
        late.start()
        w.abort()
        assert finished == [True] and not (tmp_path / "out").exists()


def test_nonfinite_rows_finds_nan_and_inf_also_when_a_sum_overflows():
    from rlkit.lerobot.files import nonfinite_rows

    big = np.full((5, 3), 3e38, dtype=np.float32)  # finite values whose sum is inf
    assert nonfinite_rows(big).tolist() == []
    big[1, 2], big[3, 0] = np.nan, -np.inf
    assert nonfinite_rows(big).tolist() == [1, 3]
    ok = np.arange(12, dtype=np.float64).reshape(4, 3)
    assert nonfinite_rows(ok).tolist() == []
    ok[2, 1] = np.inf
    assert nonfinite_rows(ok).tolist() == [2]
    assert nonfinite_rows(np.arange(4)).tolist() == []  # integers are always finite
