"""collect_demonstrations.py --camera: the top-down view as a LeRobot v3.0 video feature,
identical for any worker count, decoded back close to the rendered frames, valid, merged
without re-encoding; bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from rlkit.cli.collect_demonstrations import main as collect_main  # noqa: E402
from rlkit.cli.merge_lerobot_dataset import main as merge_main  # noqa: E402
from rlkit.collect import CAMERA_KEY  # noqa: E402
from rlkit.envs.expert import Expert  # noqa: E402
from rlkit.envs.sim import RacingConfig  # noqa: E402
from rlkit.lerobot.layout import Layout, LeRobotFormatError  # noqa: E402
from rlkit.lerobot.reader import DatasetReader  # noqa: E402
from rlkit.lerobot.validate import validate_dataset  # noqa: E402
from rlkit.lerobot.video import (  # noqa: E402
    VideoFileWriter,
    decode_episode,
    encode_episode,
)
from rlkit.rollout import expert_driver, rollout  # noqa: E402

SIZE, STEPS, EPISODES = 32, 60, 5
FLAGS = ["--episodes", str(EPISODES), "--max-steps", str(STEPS), "--camera", str(SIZE)]


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.parts[len(root.parts)] in ("data", "meta", "videos")
    }


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255**2 / mse))


@pytest.fixture(scope="module")
def camera_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("camera") / "demos"
    assert collect_main([*FLAGS, "--workers", "1", "--output", str(out)]) == 0
    return out


@pytest.mark.parametrize("vcodec", ["libsvtav1", "h264"])
def test_camera_dataset_is_identical_for_any_workers_and_decodes_to_the_rendered_frames(
    vcodec, tmp_path
):
    runs = {}
    for name, extra in {"one": ["--workers", "1"], "two": ["--workers", "2", "--chunk-size", "2"]}.items():  # fmt: skip  # noqa: E501
        runs[name] = tmp_path / name
        # in this long-lived process, after other collections: the encoders' bytes depend
        # on neither (docs/collect.md)
        assert collect_main([*FLAGS, "--vcodec", vcodec, *extra, "--output", str(runs[name])]) == 0
    assert _files(runs["one"]) == _files(runs["two"])
    root = runs["one"]
    assert validate_dataset(root) == []
    info = json.loads((root / "meta" / "info.json").read_text())
    feature = info["features"][CAMERA_KEY]
    assert feature["dtype"] == "video" and feature["shape"] == [SIZE, SIZE, 3]
    assert feature["info"]["video.codec"] == ("av1" if vcodec == "libsvtav1" else "h264")
    assert info["video_path"] == Layout.new("v3.0", videos=True).video_path
    stats = json.loads((root / "meta" / "stats.json").read_text())[CAMERA_KEY]
    assert np.shape(stats["mean"]) == (3, 1, 1) and 0 < np.min(stats["mean"]) < 1

    # the frames the collector rendered: the same episodes driven again, with the same noise
    run = rollout(expert_driver(Expert()), RacingConfig(max_episode_steps=STEPS), 0,
                  list(range(EPISODES)), "demo", noise=0.1, render_size=SIZE)  # fmt: skip
    reader = DatasetReader(root)
    for e in (0, EPISODES - 1):
        decoded = reader.video_frames(e, CAMERA_KEY)
        rendered = np.stack(run.frames[e][: run.length[e]])
        assert decoded.shape == rendered.shape
        assert _psnr(decoded, rendered) > 25  # lossy: 4:2:0 chroma at 32 px (96 px: bench)


def test_video_files_roll_over_and_episodes_decode_the_same(tmp_path):
    frames = [
        np.random.default_rng(i).integers(0, 255, (12, 16, 16, 3), np.uint8) for i in range(4)
    ]  # noqa: E501
    mp4s = [encode_episode(f, 20, "h264") for f in frames]
    layout = Layout.new("v3.0", 1000, videos=True)
    decoded = {}
    for name, limit in {"one file": 100.0, "a file each": 1e-6}.items():
        writer = VideoFileWriter(tmp_path / name, "cam", layout, 20, limit, 1000)
        locs = [writer.add(m, len(f)) for m, f in zip(mp4s, frames, strict=True)]
        writer.close()
        files = {(c, f) for c, f, _, _ in locs}
        assert len(files) == (1 if name == "one file" else 4)
        decoded[name] = [
            decode_episode(tmp_path / name / layout.video_file((c, f), "cam"), a, b)
            for c, f, a, b in locs
        ]
        assert [d.shape[0] for d in decoded[name]] == [12] * 4
    for a, b in zip(decoded["one file"], decoded["a file each"], strict=True):
        np.testing.assert_array_equal(a, b)  # packets copied, never re-encoded


def test_merging_camera_datasets_keeps_every_video_byte_for_byte(camera_set, tmp_path):
    other = tmp_path / "other"
    assert collect_main([*FLAGS, "--seed", "1", "--output", str(other)]) == 0
    merged = tmp_path / "merged"
    assert merge_main(["--sources", str(camera_set), str(other), "--output", str(merged)]) == 0
    assert validate_dataset(merged) == []
    sources = {
        hashlib.sha256(p.read_bytes()).hexdigest()
        for root in (camera_set, other)
        for p in (root / "videos").rglob("*.mp4")
    }
    out = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (merged / "videos").rglob("*.mp4")}
    assert out == sources
    a, m = DatasetReader(other), DatasetReader(merged)
    np.testing.assert_array_equal(
        m.video_frames(EPISODES + 2, CAMERA_KEY), a.video_frames(2, CAMERA_KEY)
    )


def test_a_video_shorter_than_its_episodes_is_an_error(camera_set, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(camera_set, broken)
    video = next((broken / "videos").rglob("*.mp4"))
    frames = decode_episode(video, 0.0, 1.0)  # the first 20 frames only
    video.write_bytes(encode_episode(frames, 20, "h264"))
    problems = validate_dataset(broken)
    assert problems and any("too short" in p for p in problems)
    with pytest.raises(LeRobotFormatError, match="shorter than its episode"):
        DatasetReader(broken).video_frames(EPISODES - 1, CAMERA_KEY)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--camera", "0"], "camera must be in [8, 1024] (a size in pixels, e.g. 96), got"),
        (["--camera", "big"], "--camera"),
        (["--camera", "32", "--vcodec", "mpeg2"], "--vcodec"),
    ],
)
def test_bad_camera_flags_stop_before_anything_is_written(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        collect_main(["--episodes", "2", *flags, "--output", str(tmp_path / "o")])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
