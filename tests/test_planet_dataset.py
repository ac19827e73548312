"""EpisodeDataset: virtual length, time-major batches, refresh, every loading option."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_planet_storage import make_episode  # tests/ is on sys.path

from rlkit.planet.dataset import EpisodeDataset, batch_to_device, keep_batch
from rlkit.planet.storage import EpisodeStorage


def fill(root: Path, lengths: list[int], start_seed: int = 0) -> EpisodeStorage:
    st = EpisodeStorage(root)
    for i, t in enumerate(lengths):
        ep = make_episode(t=t, seed=start_seed + i, action_dim=2)
        ep["obs"][:, 0, 0, 0] = np.arange(t + 1) % 256  # frame k carries k in pixel (0, 0, 0)
        ep["action"][:, 0] = np.arange(t)  # action k carries k
        st.add_episode(**ep)
    return st


def test_virtual_length_gives_full_batches_with_five_episodes(tmp_path: Path) -> None:
    st = fill(tmp_path, [12] * 5)
    ds = EpisodeDataset(st, seq_len=6, batch_size=16, train_steps=7)
    assert len(ds) == 16 * 7
    loader = torch.utils.data.DataLoader(ds, batch_size=16, collate_fn=keep_batch)
    batches = list(loader)
    assert len(batches) == 7
    assert all(b.obs.shape == (7, 16, 64, 64, 3) for b in batches)


def test_batches_are_time_major_with_consistent_time_indices(tmp_path: Path) -> None:
    st = fill(tmp_path, [20, 9, 15])
    ds = EpisodeDataset(st, seq_len=8, batch_size=32, train_steps=2, seed=3)
    b = ds.sample_batch()
    assert b.obs.shape == (9, 32, 64, 64, 3) and b.obs.dtype == np.uint8
    assert b.action.shape == (8, 32, 2) and b.action.dtype == np.float32
    assert b.reward.shape == (8, 32) and b.reward.dtype == np.float32
    assert b.terminal.shape == (8, 32) and b.terminal.dtype == bool
    start = b.action[0, :, 0]
    # obs[t] is frame start+t, action[t] is action start+t: contiguous, aligned windows
    np.testing.assert_array_equal(b.obs[:, :, 0, 0, 0], (start[None] + np.arange(9)[:, None]))
    np.testing.assert_array_equal(b.action[:, :, 0], start[None] + np.arange(8)[:, None])
    dev = batch_to_device(b, torch.device("cpu"))
    assert dev.obs.shape == (9, 32, 3, 64, 64) and dev.obs.dtype == torch.float32
    assert dev.obs.min() >= -0.5 and dev.obs.max() <= 0.5


def test_start_positions_are_uniform_over_valid_pairs(tmp_path: Path) -> None:
    st = fill(tmp_path, [10, 30, 4])  # 4 < seq_len: never sampled
    ds = EpisodeDataset(st, seq_len=5, batch_size=8, train_steps=1)
    assert ds.num_episodes == 2
    ep, start = ds.sample_positions(np.random.default_rng(0), 60_000)
    counts = np.bincount(ep, minlength=2)
    assert abs(counts[1] / counts[0] - 26 / 6) < 0.2  # 26 vs 6 valid starts
    assert start.min() == 0 and start[ep == 0].max() == 5 and start[ep == 1].max() == 25


def test_terminated_episodes_are_padded_with_absorbing_steps(tmp_path: Path) -> None:
    st = fill(tmp_path, [3, 4, 12])  # 3 and 4 < seq_len: only the terminated one is sampled
    crash = make_episode(t=3, seed=9, action_dim=2)
    crash["terminal"][-1], crash["truncated"][-1] = True, False
    crash["obs"][:, 0, 0, 0] = [10, 11, 12, 13]
    st.add_episode(**crash)
    assert [i.terminated for i in st.discover()] == [False, False, False, True]
    ds = EpisodeDataset(st, seq_len=5, batch_size=64, train_steps=1, seed=1)
    assert ds.num_episodes == 2  # the 12-step episode and the crash
    ep, start = ds.sample_positions(np.random.default_rng(0), 20_000)
    assert sorted(set(start[ep == 1].tolist())) == [0, 1, 2]  # every action starts a window
    b = ds.gather(np.array([1, 1]), np.array([0, 2]))
    # the crash's 3 real steps, then its last frame repeated, reward 0, terminal, any action
    np.testing.assert_array_equal(b.obs[:, 0, 0, 0, 0], [10, 11, 12, 13, 13, 13])
    np.testing.assert_array_equal(b.obs[:, 1, 0, 0, 0], [12, 13, 13, 13, 13, 13])
    np.testing.assert_array_equal(b.reward[:3, 0], crash["reward"])
    assert (b.reward[3:, 0] == 0).all() and (b.reward[1:, 1] == 0).all()
    assert b.terminal[:, 1].all() and b.terminal[2:, 0].all() and not b.terminal[:2, 0].any()
    np.testing.assert_array_equal(b.action[:3, 0], crash["action"])
    pad = b.action[1:, 1]
    assert np.abs(pad).max() <= 1 and np.unique(pad).size == pad.size  # random, in range
    again = ds.gather(np.array([1, 1]), np.array([0, 2]))
    np.testing.assert_array_equal(again.action, b.action)  # deterministic


def test_refresh_loads_only_new_files(tmp_path: Path, monkeypatch) -> None:
    st = fill(tmp_path, [10, 10])
    ds = EpisodeDataset(st, seq_len=4, batch_size=4, train_steps=1)
    loaded: list[Path] = []
    original = st.load

    def spy(infos, transform=None):
        loaded.extend(i.path for i in infos)
        return original(infos, transform)

    monkeypatch.setattr(st, "load", spy)
    assert ds.refresh() == 0 and loaded == []
    new = st.add_episode(**make_episode(t=10, seed=7, action_dim=2))
    assert ds.refresh() == 1
    assert loaded == [new] and ds.num_episodes == 3


def test_batches_depend_on_seed_and_index_not_on_workers(tmp_path: Path) -> None:
    st = fill(tmp_path, [15] * 4)
    ds = EpisodeDataset(st, seq_len=5, batch_size=6, train_steps=3, seed=1)
    in_process = [ds.sample_batch(first_index=k * 6) for k in range(3)]
    loader = torch.utils.data.DataLoader(
        ds, batch_size=6, num_workers=2, collate_fn=keep_batch, multiprocessing_context="fork"
    )
    for a, b in zip(in_process, loader, strict=True):
        np.testing.assert_array_equal(a.obs, b.obs.numpy())
        np.testing.assert_array_equal(a.action, b.action.numpy())
    again = EpisodeDataset(st, seq_len=5, batch_size=6, train_steps=3, seed=1).sample_batch()
    np.testing.assert_array_equal(again.obs, in_process[0].obs)
    ds.set_iteration(1)
    assert not np.array_equal(ds.sample_batch().action, in_process[0].action)


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_preload_dtypes_hold_the_same_frames(tmp_path: Path, dtype: str) -> None:
    st = fill(tmp_path, [12] * 3)
    ref = EpisodeDataset(st, seq_len=6, batch_size=5, train_steps=1, seed=2)
    ds = EpisodeDataset(st, seq_len=6, batch_size=5, train_steps=1, preload_dtype=dtype, seed=2)
    b = ds.sample_batch()
    assert b.obs.dtype == np.dtype(dtype)
    assert ds.nbytes >= ref.nbytes * {"uint8": 1, "float16": 1.9, "float32": 3.8}[dtype] * 0.9
    got = batch_to_device(b, torch.device("cpu")).obs
    want = batch_to_device(ref.sample_batch(), torch.device("cpu")).obs
    torch.testing.assert_close(got, want, atol=2e-3, rtol=0)  # float16 rounding


def test_lru_cache_is_bounded_and_counts_hits(tmp_path: Path) -> None:
    st = fill(tmp_path, [20] * 6)
    one = EpisodeDataset(st, 5, 4, 1).nbytes / 6  # bytes of one decoded episode
    cap_mb = 2.5 * one / 1024**2
    ds = EpisodeDataset(st, seq_len=5, batch_size=4, train_steps=1, cache_mb=cap_mb, seed=0)
    assert ds.lazy and ds.nbytes == 0  # nothing decoded up front
    ref = EpisodeDataset(st, seq_len=5, batch_size=4, train_steps=1, seed=0)
    for k in range(30):
        np.testing.assert_array_equal(ds.sample_batch(k * 4).obs, ref.sample_batch(k * 4).obs)
        assert ds.nbytes <= cap_mb * 1024**2
        assert len(ds._cache) <= 2
    assert ds.cache_misses > 0 and ds.cache_hits > 0
    big = EpisodeDataset(st, seq_len=5, batch_size=4, train_steps=1, cache_mb=1000.0)
    for k in range(30):
        big.sample_batch(k * 4)
    assert big.cache_misses == 6 and big.cache_hit_rate > 0.9


def test_bad_options_are_clear_errors(tmp_path: Path) -> None:
    st = fill(tmp_path, [10])
    with pytest.raises(ValueError, match="preload_dtype must be one of"):
        EpisodeDataset(st, 4, 4, 1, preload_dtype="int8")
    with pytest.raises(ValueError, match="do not combine"):
        EpisodeDataset(st, 4, 4, 1, preload_dtype="float16", cache_mb=10)
    ds = EpisodeDataset(st, 50, 4, 1)
    with pytest.raises(RuntimeError, match="seq_len=50"):
        ds.sample_batch()
