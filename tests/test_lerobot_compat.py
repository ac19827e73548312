"""LeRobot's own loader opens an rlkit camera dataset: ``LeRobotDataset(root=...)[i]`` returns
the frame rlkit decodes for the first, a middle and the last index.

lerobot 0.4 pins torch < 2.8 and av < 16, so it cannot share rlkit's environment: the check
runs ``scripts/lerobot_check.py`` with the Python named by ``RLKIT_LEROBOT_PYTHON`` (a venv
with ``pip install 'lerobot==0.4.1'``), offline, and compares what it saved. Slow, and
skipped without that variable.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from rlkit.cli.collect_demonstrations import main as collect_main  # noqa: E402
from rlkit.collect import CAMERA_KEY  # noqa: E402
from rlkit.lerobot.reader import DatasetReader  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "lerobot_check.py"
LEROBOT_PYTHON = os.environ.get("RLKIT_LEROBOT_PYTHON")


@pytest.mark.slow
@pytest.mark.skipif(not LEROBOT_PYTHON, reason="set RLKIT_LEROBOT_PYTHON to a Python with lerobot")
@pytest.mark.parametrize("vcodec", ["libsvtav1", "h264"])
def test_lerobot_loader_returns_rlkit_frames(vcodec, tmp_path):
    root = tmp_path / "demos"
    flags = ["--episodes", "3", "--max-steps", "50", "--camera", "48", "--vcodec", vcodec]
    assert collect_main([*flags, "--workers", "2", "--output", str(root)]) == 0
    out = tmp_path / "items.npz"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([LEROBOT_PYTHON, str(SCRIPT), str(root), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    reader = DatasetReader(root)
    cols = reader.load_columns(["episode_index", "frame_index", "action"])
    n = reader.num_frames
    assert got["items"].tolist() == [0, n // 2, n - 1]
    for i in got["items"].tolist():
        ep, fi = int(cols["episode_index"][i]), int(cols["frame_index"][i])
        assert int(got[f"{i}/episode_index"]) == ep and int(got[f"{i}/frame_index"]) == fi
        assert int(got[f"{i}/index"]) == i
        assert np.allclose(got[f"{i}/action"], cols["action"][i])
        ours = reader.video_frames(ep, CAMERA_KEY)[fi].astype(np.int16)
        theirs = got[f"{i}/{CAMERA_KEY}"].astype(np.int16)
        # the same stream decoded by another decoder setup: equal up to YUV -> RGB rounding
        assert theirs.shape == ours.shape
        assert np.abs(theirs - ours).mean() < 2.0, (i, np.abs(theirs - ours).max())
