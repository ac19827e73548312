"""Episode storage: names, atomic writes, validation of bad files, terminal vs truncated."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from rlkit.planet.storage import EpisodeFormatError, EpisodeStorage, load_episode


def make_episode(t: int = 10, seed: int = 0, action_dim: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.integers(0, 256, (t + 1, 64, 64, 3), dtype=np.uint8),
        "action": rng.uniform(-1, 1, (t, action_dim)).astype(np.float32),
        "reward": rng.standard_normal(t).astype(np.float32),
        "terminal": np.zeros(t, bool),
        "truncated": np.eye(1, t, t - 1, dtype=bool)[0],
    }


def test_names_use_max_index_plus_one_never_the_count(tmp_path: Path) -> None:
    st = EpisodeStorage(tmp_path)
    paths = [st.add_episode(**make_episode(seed=i)) for i in range(3)]
    assert [p.name for p in paths] == [f"episode_00000{i}.npz" for i in range(3)]
    paths[1].unlink()  # a gap: the count is now 2, but index 2 exists
    p = st.add_episode(**make_episode(seed=9))
    assert p.name == "episode_000003.npz"
    assert len({q.name for q in tmp_path.glob("episode_*.npz")}) == 3


def test_a_name_taken_by_another_writer_is_never_overwritten(tmp_path: Path, monkeypatch) -> None:
    st = EpisodeStorage(tmp_path)
    first = st.add_episode(**make_episode(seed=1))
    before = first.read_bytes()
    monkeypatch.setattr(st, "next_index", lambda: 0)  # a stale view of the folder
    second = st.add_episode(**make_episode(seed=2))
    assert second.name == "episode_000001.npz"
    assert first.read_bytes() == before


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    st = EpisodeStorage(tmp_path)
    ep = make_episode(t=7)
    path = st.add_episode(**ep)
    assert sorted(os.listdir(tmp_path)) == [path.name]
    back = load_episode(path)
    for key, value in ep.items():
        np.testing.assert_array_equal(back[key], value)
    assert back["obs"].dtype == np.uint8 and back["action"].dtype == np.float32


def test_terminal_and_truncated_are_kept_apart(tmp_path: Path) -> None:
    st = EpisodeStorage(tmp_path)
    ep = make_episode(t=5)
    ep["terminal"][-1], ep["truncated"][-1] = True, False
    back = load_episode(st.add_episode(**ep))
    assert back["terminal"].tolist() == [False] * 4 + [True]
    assert not back["truncated"].any()
    ep2 = make_episode(t=5)  # a time limit: truncated, not terminal
    back2 = load_episode(st.add_episode(**ep2))
    assert back2["truncated"][-1] and not back2["terminal"].any()


def test_bad_shapes_are_rejected_before_writing(tmp_path: Path) -> None:
    st = EpisodeStorage(tmp_path)
    ep = make_episode(t=5)
    ep["reward"] = ep["reward"][:3]
    with pytest.raises(ValueError, match="reward must have shape"):
        st.add_episode(**ep)
    assert list(tmp_path.iterdir()) == []


def test_bad_truncated_and_foreign_files_are_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    st = EpisodeStorage(tmp_path, workers=2)
    good = [st.add_episode(**make_episode(seed=i)) for i in range(3)]
    data = good[2].read_bytes()
    (tmp_path / "episode_000010.npz").write_bytes(data[: len(data) // 2])  # truncated
    (tmp_path / "episode_000011.npz").write_bytes(b"not a zip at all")  # unreadable
    np.savez(tmp_path / "episode_000012.npz", image=np.zeros(3))  # foreign keys
    bad_obs = make_episode()
    bad_obs["obs"] = bad_obs["obs"].astype(np.float32)
    np.savez(tmp_path / "episode_000013.npz", **bad_obs)  # wrong dtype
    (tmp_path / "notes.txt").write_text("ignored: not an episode name")
    with caplog.at_level(logging.WARNING, logger="rlkit.planet.storage"):
        infos = st.discover()
    assert [i.path for i in infos] == good
    for idx in (10, 11, 12, 13):
        assert f"episode_0000{idx}.npz" in caplog.text
    # once per file: a second discovery does not repeat the warnings
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rlkit.planet.storage"):
        st.discover()
    assert caplog.text == ""
    assert st.next_index() == 14  # bad files still reserve their names


def test_a_file_damaged_after_validation_is_skipped_when_loading(tmp_path: Path, caplog) -> None:
    st = EpisodeStorage(tmp_path)
    a = st.add_episode(**make_episode(seed=0))
    b = st.add_episode(**make_episode(seed=1))
    infos = st.discover()
    raw = bytearray(b.read_bytes())
    raw[200:400] = b"\0" * 200  # corrupt compressed data, keep the zip directory
    b.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        loaded = st.load(infos)
    assert [info.path for info, _ in loaded] == [a]
    assert b.name in caplog.text


def test_load_episode_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "episode_000000.npz"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(EpisodeFormatError, match="episode_000000.npz"):
        load_episode(bad)


def test_parallel_and_serial_loading_find_the_same_episodes(tmp_path: Path) -> None:
    st = EpisodeStorage(tmp_path, workers=4)
    for i in range(6):
        st.add_episode(**make_episode(t=5 + i, seed=i))
    (tmp_path / "episode_000099.npz").write_bytes(b"junk")
    infos = st.discover()
    assert [i.length for i in infos] == [5, 6, 7, 8, 9, 10]
    par = st.load(infos)
    ser = EpisodeStorage(tmp_path, workers=1).load(infos)
    assert [i for i, _ in par] == [i for i, _ in ser] == infos
    for (_, a), (_, b) in zip(par, ser, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_env_json_guards_against_mixing_envs(tmp_path: Path) -> None:
    st = EpisodeStorage(tmp_path)
    spec = {"env": "pendulum", "action_repeat": 2}
    st.check_env(spec)
    st.check_env(spec)  # same env: fine
    with pytest.raises(ValueError, match="action_repeat: folder has 2, run wants 4"):
        st.check_env({"env": "pendulum", "action_repeat": 4})


def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot create it"):
        EpisodeStorage(blocker / "sub")


@pytest.mark.parametrize("save", [np.savez_compressed, np.savez])
def test_fast_reader_matches_np_load_and_checks_the_crc(tmp_path: Path, save) -> None:
    ep = make_episode(t=7, seed=3)
    ep["action"] = np.asfortranarray(np.random.default_rng(1).uniform(-1, 1, (7, 3)), np.float32)
    path = tmp_path / "episode_000000.npz"
    save(path, **ep)
    got = load_episode(path)
    with np.load(path) as ref:
        for key in ref.files:
            assert got[key].dtype == ref[key].dtype and np.array_equal(got[key], ref[key]), key
    info = EpisodeStorage(tmp_path).discover()[0]
    assert (info.length, info.action_dim) == (7, 3)
    # One flipped bit inside the frames: the zip's CRC-32 catches it, compressed or not.
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(EpisodeFormatError, match="episode_000000.npz"):
        load_episode(path)
