"""Tests for rlkit.lerobot.merge and merge_lerobot_dataset.py: real datasets on disk, no mocks.

Sources are written by hand in the v2.1 and v3.0 layouts (``conftest.build``, with real tiny
mp4 videos) and with rlkit's own writer.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FPS, IMAGE_KEY, VIDEO_KEY, Spec, build

from rlkit.cli.merge_lerobot_dataset import main as merge_main
from rlkit.lerobot import (
    DatasetReader,
    LeRobotFormatError,
    aggregate_stats,
    compute_stats,
    validate_dataset,
    write_dataset,
)
from rlkit.lerobot.merge import MergeConfig, merge, summary_text
from rlkit.lerobot.merge.features import _extend_names
from rlkit.lerobot.stats import QUANTILES


def padded(x: np.ndarray, dim: int) -> np.ndarray:
    out = np.zeros((len(x), dim), dtype=x.dtype)
    out[:, : x.shape[1]] = x
    return out


def video_file(row: pd.Series) -> str:
    """The v3.0 mp4 path of an episodes-table row."""
    c, f = row[f"videos/{VIDEO_KEY}/chunk_index"], row[f"videos/{VIDEO_KEY}/file_index"]
    return f"videos/{VIDEO_KEY}/chunk-{c:03d}/file-{f:03d}.mp4"


def no_leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """A v2.1 source (dim 3, dict names, a multi-task episode) and a v3.0 source (dim 5)."""
    a = build(
        tmp_path / "a",
        "v2.1",
        Spec(
            lengths=[6, 9, 4],
            tasks=["stack", "shared"],
            episode_tasks=[[0], [0, 1], [1]],
            names={"observation.state": {"motors": ["j0", "j1", "j2"]}, "action": [["x", "y"]]},
            seed=0,
        ),
    )
    b = build(
        tmp_path / "b",
        "v3.0",
        Spec(
            lengths=[5, 7, 8, 3],
            dims={"observation.state": 5, "action": 2},
            tasks=["shared", "push"],
            episode_tasks=[[1], [0], [1], [0]],
            seed=1,
        ),
    )
    return [tmp_path / "a", tmp_path / "b"], [a, b]


# ----------------------------------------------------------------------------- data + metadata
def test_mixed_v21_v3_merge_reindexes_pads_and_remaps(
    tmp_path: Path, mixed: tuple[list[Path], list[dict[str, Any]]]
) -> None:
    sources, truth = mixed
    out = tmp_path / "out"
    res = merge(MergeConfig(sources=[str(s) for s in sources], output=str(out)), progress=False)
    assert (res.episodes, res.frames, res.tasks, res.version) == (7, 19 + 23, 3, "v3.0")
    assert res.padded == {"observation.state": ([3, 5], 5)}
    assert "observation.state: [3, 5] -> 5" in summary_text(res)
    assert validate_dataset(out) == []

    ds = DatasetReader(out)
    assert ds.tasks == ["stack", "shared", "push"]  # deduplicated, first appearance
    cols = ds.load_columns()
    n = res.frames
    np.testing.assert_array_equal(cols["index"], np.arange(n))
    lengths = [6, 9, 4, 5, 7, 8, 3]
    np.testing.assert_array_equal(cols["episode_index"], np.repeat(np.arange(7), lengths))
    for key in ("frame_index", "timestamp"):
        np.testing.assert_array_equal(
            cols[key], np.concatenate([t["cols"][key] for t in truth]), err_msg=key
        )
    state = np.concatenate(
        [padded(truth[0]["cols"]["observation.state"], 5), truth[1]["cols"]["observation.state"]]
    )
    assert cols["observation.state"].dtype == np.float32
    np.testing.assert_array_equal(cols["observation.state"], state)
    np.testing.assert_array_equal(
        cols["action"], np.concatenate([t["cols"]["action"] for t in truth])
    )
    # task strings per row survive the remap; the multi-task episode keeps both tasks
    row_tasks = [ds.tasks[i] for i in cols["task_index"]]
    assert row_tasks == truth[0]["row_tasks"] + truth[1]["row_tasks"]
    assert [list(t) for t in ds.episodes["tasks"]] == truth[0]["ep_tasks"] + truth[1]["ep_tasks"]
    assert list(ds.episodes["tasks"].iloc[1]) == ["stack", "shared"]

    # parquet: fixed_size_list<float>[5], huggingface metadata, one row group per episode
    files = sorted((out / "data").glob("chunk-*/file-*.parquet"))
    pf = pq.ParquetFile(files[0])
    typ = pf.schema_arrow.field("observation.state").type
    assert pa.types.is_fixed_size_list(typ) and typ.list_size == 5
    assert typ.value_type == pa.float32()
    hf = json.loads(pf.schema_arrow.metadata[b"huggingface"])["info"]["features"]
    assert hf["observation.state"]["length"] == 5 and hf["index"]["dtype"] == "int64"
    assert b"pandas" not in pf.schema_arrow.metadata
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)] == lengths
    info = json.loads((out / "meta/info.json").read_text())
    assert info["features"]["observation.state"]["shape"] == [5]
    assert info["features"]["action"]["names"] == [["x", "y"]]  # first source's names kept
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (7, n, 3)


def test_stats_match_ground_truth_exact_and_pooled(
    tmp_path: Path, mixed: tuple[list[Path], list[dict[str, Any]]]
) -> None:
    sources, _ = mixed
    results = {}
    for mode, max_mb in (("exact", 1024.0), ("pooled", 0.0)):
        out = tmp_path / mode
        cfg = MergeConfig(sources=[str(s) for s in sources], output=str(out), stats_max_mb=max_mb)
        assert merge(cfg, progress=False).exact_stats == (mode == "exact")
        results[mode] = json.loads((out / "meta/stats.json").read_text())
    ds = DatasetReader(tmp_path / "exact")
    cols = ds.load_columns()
    b = np.concatenate([[0], np.cumsum(ds.episodes["length"])])
    for key, values in cols.items():
        truth = compute_stats(values)  # ground truth: the concatenated merged data
        per_ep = [compute_stats(values[b[e] : b[e + 1]]) for e in range(len(b) - 1)]
        for mode, stats in results.items():
            got = stats[key]
            assert np.shape(got["count"]) == (1,) and got["count"] == [len(values)]
            for s in ("mean", "std", "min", "max"):
                np.testing.assert_allclose(got[s], truth[s], rtol=1e-9, atol=1e-12, err_msg=key)
            for q, p in QUANTILES.items():
                if mode == "exact" or key in (
                    "index",
                    "episode_index",
                    "task_index",
                    "timestamp",
                    "frame_index",
                ):
                    np.testing.assert_allclose(got[q], truth[q], rtol=1e-12, err_msg=f"{key} {q}")
                else:  # pooled: the envelope of the per-episode quantiles
                    qs = np.stack([st[q] for st in per_ep])
                    env = qs.min(axis=0) if p <= 0.5 else qs.max(axis=0)
                    np.testing.assert_allclose(got[q], env, rtol=1e-12, err_msg=f"{key} {q}")
    # the between-group term matters: source means differ (seed 0 vs 1 shifts the state)
    state = cols["observation.state"].astype(np.float64)
    within = np.mean([state[:19].std(0), state[19:].std(0)], axis=0)
    assert np.all(np.asarray(results["pooled"]["observation.state"]["std"])[:3] > within[:3])

    # per-episode stats rewritten with the new indices
    eps = pd.read_parquet(tmp_path / "exact/meta/episodes/chunk-000/file-000.parquet")
    b = np.concatenate([[0], np.cumsum(eps["length"])])
    for e in range(len(eps)):
        for key in ("observation.state", "episode_index", "index", "task_index"):
            truth = compute_stats(cols[key][b[e] : b[e + 1]])
            for s, v in truth.items():
                np.testing.assert_allclose(
                    np.asarray(eps[f"stats/{key}/{s}"].iloc[e]).reshape(v.shape), v, rtol=1e-12
                )


def test_rlkit_writer_sources_and_file_rollover(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    sources = []
    for i, lengths in enumerate(([30, 40, 25], [35, 30])):
        n = sum(lengths)
        ep = np.repeat(np.arange(len(lengths)), lengths)
        data = {
            "observation.state": rng.standard_normal((n, 4)).astype(np.float32),
            "action": rng.standard_normal((n, 2)).astype(np.float32),
            "next.done": np.zeros(n, dtype=bool),
            "episode_index": ep,
        }
        sources.append(str(write_dataset(tmp_path / f"s{i}", data, fps=FPS, tasks=[f"t{i}"])))
    out = tmp_path / "out"
    res = merge(
        MergeConfig(sources=sources, output=str(out), data_files_size_in_mb=0.002, chunks_size=2),
        progress=False,
    )
    assert res.data_files >= 3 and res.padded == {}
    files = sorted(p.relative_to(out).as_posix() for p in (out / "data").rglob("*.parquet"))
    assert "data/chunk-001/file-000.parquet" in files  # rolled over at chunks_size=2
    for f in files:  # episodes never span files, one row group each
        md = pq.read_metadata(out / f)
        eps = pq.read_table(out / f, columns=["episode_index"]).column(0).to_numpy()
        assert md.num_row_groups == len(np.unique(eps))
    ds = DatasetReader(out)
    assert validate_dataset(out) == []
    assert ds.features["next.done"]["dtype"] == "bool"
    src = [DatasetReader(s).load_columns(["observation.state"]) for s in sources]
    np.testing.assert_array_equal(
        ds.load_columns(["observation.state"])["observation.state"],
        np.concatenate([c["observation.state"] for c in src]),
    )


def test_source_with_episode_gap_is_reindexed(tmp_path: Path) -> None:
    a = tmp_path / "a"
    t = build(a, "v2.1", Spec(lengths=[3, 4, 5]))
    # delete episode 1 the way users do: its file and its metadata lines
    (a / "data/chunk-000/episode_000001.parquet").unlink()
    for name in ("episodes.jsonl", "episodes_stats.jsonl"):
        lines = (a / "meta" / name).read_text().splitlines()
        (a / "meta" / name).write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    assert any("without gaps" in p for p in validate_dataset(a))
    out = tmp_path / "out"
    merge(MergeConfig(sources=[str(a)], output=str(out)), progress=False)
    assert validate_dataset(out) == []
    cols = DatasetReader(out).load_columns(["episode_index", "index", "action"])
    np.testing.assert_array_equal(cols["episode_index"], [0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(cols["index"], np.arange(8))
    keep = np.r_[0:3, 7:12]
    np.testing.assert_array_equal(cols["action"], t["cols"]["action"][keep])


# ----------------------------------------------------------------------------- padding
def test_extend_names_flat_nested_dict_and_null() -> None:
    assert _extend_names(["a", "b"], 2, 4) == ["a", "b", "pad_2", "pad_3"]
    assert _extend_names([["a", "b"]], 2, 3) == [["a", "b", "pad_2"]]
    assert _extend_names({"motors": ["a", "b"]}, 2, 3) == {"motors": ["a", "b", "pad_2"]}
    assert _extend_names(None, 2, 3) is None
    assert _extend_names(["only-one"], 2, 3) == ["only-one"]  # wrong length: left alone


def test_pad_to_extends_names_and_no_pad_refuses(
    tmp_path: Path, mixed: tuple[list[Path], list[dict[str, Any]]]
) -> None:
    sources, truth = mixed
    srcs = [str(s) for s in sources]
    out = tmp_path / "out"
    res = merge(MergeConfig(sources=srcs, output=str(out), pad_to=8), progress=False)
    assert res.padded == {"observation.state": ([3, 5], 8), "action": ([2, 2], 8)}
    info = json.loads((out / "meta/info.json").read_text())
    assert info["features"]["action"]["names"] == [["x", "y", *(f"pad_{i}" for i in range(2, 8))]]
    assert info["features"]["observation.state"]["shape"] == [8]
    cols = DatasetReader(out).load_columns(["action"])
    np.testing.assert_array_equal(
        cols["action"], padded(np.concatenate([t["cols"]["action"] for t in truth]), 8)
    )
    assert validate_dataset(out) == []

    with pytest.raises(LeRobotFormatError, match=r"different dims \(.*a: 3, .*b: 5\).*--no-pad"):
        merge(MergeConfig(sources=srcs, output=str(tmp_path / "x"), pad=False), progress=False)
    with pytest.raises(LeRobotFormatError, match=r"--pad-to 4 is smaller than .* dim 5"):
        merge(MergeConfig(sources=srcs, output=str(tmp_path / "x"), pad_to=4), progress=False)
    assert not (tmp_path / "x").exists() and no_leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- bad input
def test_incompatible_sources_fail_before_writing(tmp_path: Path) -> None:
    a = tmp_path / "a"
    build(a, "v2.1", Spec(lengths=[4, 5]))
    cases = {
        "fps": (Spec(lengths=[3], fps=15), r"fps=10.*fps=15|one fps"),
        "keys": (Spec(lengths=[3], dims={"observation.state": 3}), r"lacks \['action'\]"),
        "shape": (Spec(lengths=[3], image_shape=[3, 8, 8]), r"same feature keys"),
    }
    for name, (spec, pattern) in cases.items():
        b = tmp_path / name
        build(b, "v3.0", spec)
        with pytest.raises(LeRobotFormatError, match=pattern) as err:
            merge(
                MergeConfig(sources=[str(a), str(b)], output=str(tmp_path / "out")), progress=False
            )
        assert str(b) in str(err.value) and str(a) in str(err.value)
    # dtype mismatch names both sources
    c = tmp_path / "c"
    build(c, "v2.1", Spec(lengths=[3]))
    info = json.loads((c / "meta/info.json").read_text())
    info["features"]["action"]["dtype"] = "float64"
    (c / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(LeRobotFormatError, match=r"'action' has dtype float32 in .* but float64"):
        merge(MergeConfig(sources=[str(a), str(c)], output=str(tmp_path / "out")), progress=False)
    # output inside a source, the same source twice, no sources
    with pytest.raises(ValueError, match="overlaps source"):
        merge(MergeConfig(sources=[str(a)], output=str(a / "merged")), progress=False)
    with pytest.raises(ValueError, match="given twice"):
        merge(MergeConfig(sources=[str(a), str(a)], output=str(tmp_path / "out")), progress=False)
    with pytest.raises(ValueError, match="at least one"):
        merge(MergeConfig(sources=[], output=str(tmp_path / "out")), progress=False)
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path) == []


def test_missing_parquet_files_are_all_listed(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    build(a, "v2.1", Spec(lengths=[3, 4, 5, 6]))
    build(b, "v3.0", Spec(lengths=[3, 4, 5]))
    gone = [
        a / "data/chunk-000/episode_000001.parquet",
        a / "data/chunk-000/episode_000003.parquet",
        b / "data/chunk-000/file-001.parquet",
    ]
    for p in gone:
        p.unlink()
    with pytest.raises(LeRobotFormatError, match="3 data file") as err:
        merge(MergeConfig(sources=[str(a), str(b)], output=str(tmp_path / "out")), progress=False)
    for p in gone:
        assert str(p) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_failure_while_writing_leaves_nothing_and_keeps_old_output(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    build(a, "v2.1", Spec(lengths=[3, 4]))
    build(b, "v2.1", Spec(lengths=[5, 2], seed=3))
    out = tmp_path / "out"
    merge(MergeConfig(sources=[str(a)], output=str(out)), progress=False)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        merge(MergeConfig(sources=[str(a), str(b)], output=str(out)), progress=False)
    # corrupt b: its second file claims to be episode 7 -> found only while converting rows
    path = b / "data/chunk-000/episode_000001.parquet"
    df = pd.read_parquet(path)
    df["episode_index"] = 7
    df.to_parquet(path)
    with pytest.raises(
        LeRobotFormatError, match=r"episode_000001.parquet: row 0 has episode_index 7"
    ):
        merge(
            MergeConfig(sources=[str(a), str(b)], output=str(out), overwrite=True), progress=False
        )
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert DatasetReader(out).num_episodes == 2 and no_leftovers(tmp_path) == []
    # overwrite replaces the old output when the sources are fine
    build(tmp_path / "c", "v3.0", Spec(lengths=[2, 2]))
    res = merge(
        MergeConfig(sources=[str(a), str(tmp_path / "c")], output=str(out), overwrite=True),
        progress=False,
    )
    assert DatasetReader(out).num_episodes == res.episodes == 4 and no_leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- images + videos
def test_image_feature_rides_in_parquet_with_both_axis_orders(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ta = build(a, "v2.1", Spec(lengths=[4, 6], image_shape=[3, 8, 8], seed=0))
    tb = build(b, "v3.0", Spec(lengths=[5, 3, 2], image_shape=[8, 8, 3], seed=1))
    out = tmp_path / "out"
    merge(MergeConfig(sources=[str(a), str(b)], output=str(out)), progress=False)
    assert validate_dataset(out) == []
    info = json.loads((out / "meta/info.json").read_text())
    assert info["features"][IMAGE_KEY]["shape"] == [3, 8, 8]  # first source's convention
    table = pq.read_table(sorted((out / "data").rglob("*.parquet"))[0])
    assert pa.types.is_struct(table.schema.field(IMAGE_KEY).type)
    got = [row["bytes"] for row in table.column(IMAGE_KEY).to_pylist()]
    assert got == ta["images"] + tb["images"]
    # image stats stay (3,1,1), pooled with the between-group term from per-episode stats
    truth = aggregate_stats(
        [
            {s: v[e] for s, v in t["img_stats"].items()}
            for t in (ta, tb)
            for e in range(len(t["spec"].lengths))
        ]
    )
    stats = json.loads((out / "meta/stats.json").read_text())[IMAGE_KEY]
    for s in ("mean", "std", "min", "max"):
        assert np.shape(stats[s]) == (3, 1, 1)
        np.testing.assert_allclose(stats[s], truth[s], rtol=1e-9)
    assert stats["count"] == [20]
    eps = pd.read_parquet(out / "meta/episodes/chunk-000/file-000.parquet")
    mean4 = np.array([np.stack(np.stack(x)) for x in eps[f"stats/{IMAGE_KEY}/mean"].iloc[4]])
    np.testing.assert_allclose(mean4.reshape(3, 1, 1), tb["img_stats"]["mean"][2])


def test_v20_source_without_episode_stats(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ta = build(a, "v2.1", Spec(lengths=[4, 6, 3], image_shape=[8, 8, 3], seed=0))
    tb = build(b, "v3.0", Spec(lengths=[5, 3], image_shape=[8, 8, 3], seed=1))
    # turn a into a v2.0 dataset: no episodes_stats.jsonl, dataset stats.json only
    (a / "meta/episodes_stats.jsonl").unlink()
    info = json.loads((a / "meta/info.json").read_text())
    info["codebase_version"] = "v2.0"
    (a / "meta/info.json").write_text(json.dumps(info))
    img_a = aggregate_stats([{s: v[e] for s, v in ta["img_stats"].items()} for e in range(3)])
    stats_a = {IMAGE_KEY: {s: np.asarray(v).tolist() for s, v in img_a.items()}}
    (a / "meta/stats.json").write_text(json.dumps(stats_a))
    out = tmp_path / "out"
    res = merge(MergeConfig(sources=[str(a), str(b)], output=str(out)), progress=False)
    assert res.episodes == 5 and validate_dataset(out) == []
    img_b = aggregate_stats([{s: v[e] for s, v in tb["img_stats"].items()} for e in range(2)])
    truth = aggregate_stats([img_a, img_b])
    stats = json.loads((out / "meta/stats.json").read_text())
    for s in ("mean", "std", "min", "max", "count"):
        np.testing.assert_allclose(stats[IMAGE_KEY][s], truth[s], rtol=1e-9, err_msg=s)
    eps = pd.read_parquet(out / "meta/episodes/chunk-000/file-000.parquet")
    assert not any(c.startswith(f"stats/{IMAGE_KEY}/") for c in eps.columns)  # unknown for a
    state = np.concatenate([ta["cols"]["observation.state"], tb["cols"]["observation.state"]])
    np.testing.assert_allclose(
        np.stack(eps["stats/observation.state/mean"]),
        [
            state[i : i + n].mean(0)
            for i, n in zip([0, 4, 10, 13, 18], [4, 6, 3, 5, 3], strict=True)
        ],
        rtol=1e-6,
    )


def test_videos_carried_byte_equal_linked_or_copied(tmp_path: Path) -> None:
    pytest.importorskip("av")
    a, b = tmp_path / "a", tmp_path / "b"
    build(a, "v2.1", Spec(lengths=[4, 6, 5], video=True, seed=0))
    build(b, "v3.0", Spec(lengths=[5, 3, 4, 2], video=True, seed=1))
    out = tmp_path / "out"
    res = merge(MergeConfig(sources=[str(a), str(b)], output=str(out)), progress=False)
    assert (res.videos_linked, res.videos_copied) == (5, 0)  # 3 episode files + 2 v3 files
    assert validate_dataset(out) == []
    eps = DatasetReader(out).episodes
    src_a = [a / f"videos/chunk-000/{VIDEO_KEY}/episode_{e:06d}.mp4" for e in range(3)]
    src_b = [b / f"videos/{VIDEO_KEY}/chunk-000/file-{f:03d}.mp4" for f in (0, 0, 1, 1)]
    src_ts = pd.read_parquet(b / "meta/episodes/chunk-000/file-000.parquet")
    for e, src in enumerate(src_a + src_b):
        row = eps.iloc[e]
        dst = out / video_file(row)
        assert dst.read_bytes() == src.read_bytes(), e
        assert os.stat(dst).st_ino == os.stat(src).st_ino  # hard link, same filesystem
        t0, t1 = row[f"videos/{VIDEO_KEY}/from_timestamp"], row[f"videos/{VIDEO_KEY}/to_timestamp"]
        if e < 3:
            assert (t0, t1) == (0.0, row["length"] / FPS)
        else:
            assert t0 == src_ts[f"videos/{VIDEO_KEY}/from_timestamp"].iloc[e - 3]
            assert t1 == pytest.approx(t0 + row["length"] / FPS)
    stats = json.loads((out / "meta/stats.json").read_text())
    assert np.shape(stats[VIDEO_KEY]["mean"]) == (3, 1, 1)

    res = merge(
        MergeConfig(sources=[str(a), str(b)], output=str(tmp_path / "copied"), copy=True),
        progress=False,
    )
    assert (res.videos_linked, res.videos_copied) == (0, 5)
    f0 = tmp_path / f"copied/videos/{VIDEO_KEY}/chunk-000/file-000.mp4"
    assert f0.read_bytes() == src_a[0].read_bytes()
    assert os.stat(f0).st_ino != os.stat(src_a[0]).st_ino

    # v2.1 output cannot split the multi-episode v3.0 mp4 files without re-encoding
    with pytest.raises(LeRobotFormatError, match="hold\\s+several episodes|several episodes"):
        merge(
            MergeConfig(
                sources=[str(a), str(b)], output=str(tmp_path / "v21"), output_version="v2.1"
            ),
            progress=False,
        )
    # ... but per-episode v2.1 videos go to per-episode v2.1 paths
    merge(
        MergeConfig(sources=[str(a)], output=str(tmp_path / "v21"), output_version="v2.1"),
        progress=False,
    )
    dst = tmp_path / f"v21/videos/chunk-000/{VIDEO_KEY}/episode_000002.mp4"
    assert dst.read_bytes() == src_a[2].read_bytes()
    assert validate_dataset(tmp_path / "v21") == []


def test_missing_videos_listed_or_episodes_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("av")
    a, b = tmp_path / "a", tmp_path / "b"
    ta = build(a, "v2.1", Spec(lengths=[4, 6, 5, 3], video=True, seed=0))
    tb = build(b, "v3.0", Spec(lengths=[5, 3, 4, 2], video=True, seed=1))
    gone = [
        a / f"videos/chunk-000/{VIDEO_KEY}/episode_000001.mp4",
        a / f"videos/chunk-000/{VIDEO_KEY}/episode_000003.mp4",
        b / f"videos/{VIDEO_KEY}/chunk-000/file-001.mp4",
    ]
    kept_a2 = (a / f"videos/chunk-000/{VIDEO_KEY}/episode_000002.mp4").read_bytes()
    for p in gone:
        p.unlink()
    srcs = [str(a), str(b)]
    with pytest.raises(LeRobotFormatError, match="3 video file") as err:
        merge(MergeConfig(sources=srcs, output=str(tmp_path / "out")), progress=False)
    assert all(str(p) in str(err.value) for p in gone) and "--skip-missing-videos" in str(err.value)
    assert not (tmp_path / "out").exists()

    out = tmp_path / "out"
    res = merge(
        MergeConfig(sources=srcs, output=str(out), skip_missing_videos=True), progress=False
    )
    assert res.dropped == [(str(a), 1), (str(a), 3), (str(b), 2), (str(b), 3)]
    assert "dropping 4 episode(s)" in caplog.text
    assert res.episodes == 4 and validate_dataset(out) == []
    ds = DatasetReader(out)
    np.testing.assert_array_equal(ds.episodes["length"], [4, 5, 5, 3])
    # merged episode 1 is source a's episode 2, with its own video (never a substitute)
    row = ds.episodes.iloc[1]
    dst = out / video_file(row)
    assert dst.read_bytes() == kept_a2
    cols = ds.load_columns(["action"])
    b_a = ta["bounds"]
    np.testing.assert_array_equal(
        cols["action"],
        np.concatenate(
            [
                ta["cols"]["action"][b_a[0] : b_a[1]],
                ta["cols"]["action"][b_a[2] : b_a[3]],
                tb["cols"]["action"][: tb["bounds"][2]],
            ]
        ),
    )


# ----------------------------------------------------------------------------- v2.1 output
def test_v21_output_and_round_trip_back_to_v3(
    tmp_path: Path, mixed: tuple[list[Path], list[dict[str, Any]]]
) -> None:
    sources, _ = mixed
    srcs = [str(s) for s in sources]
    v21, v3 = tmp_path / "v21", tmp_path / "v3"
    res = merge(
        MergeConfig(sources=srcs, output=str(v21), output_version="v2.1", chunks_size=4),
        progress=False,
    )
    assert res.data_files == 7
    assert (v21 / "data/chunk-001/episode_000004.parquet").is_file()  # chunks_size=4
    info = json.loads((v21 / "meta/info.json").read_text())
    assert info["codebase_version"] == "v2.1" and info["total_chunks"] == 2
    assert info["data_path"] == "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    lines = [json.loads(x) for x in (v21 / "meta/episodes_stats.jsonl").read_text().splitlines()]
    assert [x["episode_index"] for x in lines] == list(range(7))
    assert set(lines[0]["stats"]["observation.state"]) == {"min", "max", "mean", "std", "count"}
    assert lines[3]["stats"]["index"]["min"] == [19.0]  # new global index of episode 3
    ds21 = DatasetReader(v21)
    assert ds21.version == "v2.1" and validate_dataset(v21) == []
    typ = pq.read_schema(v21 / "data/chunk-000/episode_000000.parquet").field("action").type
    assert pa.types.is_fixed_size_list(typ) and typ.value_type == pa.float32()

    merge(MergeConfig(sources=srcs, output=str(v3)), progress=False)
    back = tmp_path / "back"
    merge(MergeConfig(sources=[str(v21)], output=str(back)), progress=False)
    a, b = DatasetReader(v3).load_columns(), DatasetReader(back).load_columns()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert DatasetReader(back).tasks == DatasetReader(v3).tasks
    assert json.loads((back / "meta/stats.json").read_text()) == json.loads(
        (v3 / "meta/stats.json").read_text()
    )


# ----------------------------------------------------------------------------- CLI
def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    build(a, "v2.1", Spec(lengths=[3, 4]))
    build(b, "v3.0", Spec(lengths=[2, 5], dims={"observation.state": 6, "action": 2}))
    out = tmp_path / "out"
    assert merge_main(["--sources", str(a), str(b), "--output", str(out), "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "episodes      4" in text and "frames/s" in text and "observation.state" in text
    assert (out / "meta/info.json").is_file()

    assert merge_main(["--sources", str(a), "--output", str(out)]) == 1  # exists
    assert "exists; pass --overwrite" in capsys.readouterr().err
    args = ["--sources", str(a), str(b), "--output", str(tmp_path / "o2"), "--no-pad"]
    assert merge_main(args) == 1
    assert "--no-pad" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        merge_main(["--sources", str(a), "--output-version", "v9"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        merge_main(["--sources", str(a), "--pad-to", "3", "--no-pad"])
    assert exc.value.code == 2
    assert merge_main(["--output", str(tmp_path / "o3")]) == 2
    assert "sources is required" in capsys.readouterr().err


def test_rlkit_racing_data_keeps_its_env_only_when_every_source_shares_it(
    demos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rlkit.collect import CollectConfig, collect
    from rlkit.lerobot.env_meta import ENV_META_PATH, load_env_config

    def recorded(name: str, **options: Any) -> Path:
        cfg = CollectConfig(episodes=2, workers=1, max_steps=150, output=str(tmp_path / name))
        collect(dataclasses.replace(cfg, **options), progress=False)
        return tmp_path / name

    same, dense = recorded("same", seed=1), recorded("dense", seed=1, preview=[5.0, 10.0])
    merge(
        MergeConfig(sources=[str(demos), str(same)], output=str(tmp_path / "kept")), progress=False
    )
    kept = tmp_path / "kept" / ENV_META_PATH
    assert kept.read_text() == (demos / ENV_META_PATH).read_text()  # BC evaluates it on tracks
    assert load_env_config(tmp_path / "kept") == load_env_config(demos)
    merge(
        MergeConfig(sources=[str(demos), str(dense)], output=str(tmp_path / "mixed")),
        progress=False,
    )
    assert not (tmp_path / "mixed" / ENV_META_PATH).exists()
    assert "different racing envs (preview: [5.0, 15.0, 30.0, 50.0] vs [5.0, 10.0])" in caplog.text
