"""Open an rlkit dataset with LeRobot's own loader and save what it returns.

Run it with a Python that has ``lerobot`` (0.4.x) installed -- not rlkit's environment:
lerobot 0.4 pins torch < 2.8 and av < 16, so it lives in a virtual environment of its own::

    python -m venv ~/lerobot-venv && ~/lerobot-venv/bin/pip install 'lerobot==0.4.1'
    ~/lerobot-venv/bin/python scripts/lerobot_check.py data/camera_demos /tmp/items.npz [BACKEND]

It loads ``LeRobotDataset(repo_id, root=DATASET, video_backend=BACKEND)`` offline
(``HF_HUB_OFFLINE=1``: nothing is downloaded), reads items 0, N // 2 and N - 1, and writes
their camera frames (uint8 ``(H, W, 3)``), ``episode_index``, ``frame_index``, ``index`` and
``action`` to OUT.npz.
``tests/test_lerobot_compat.py`` (slow; set ``RLKIT_LEROBOT_PYTHON`` to that Python)
compares them with rlkit's own reading of the dataset. BACKEND is LeRobot's video decoder:
``pyav`` (the default here: it needs nothing beyond the wheels) or ``torchcodec`` (LeRobot's
own default, which needs FFmpeg's shared libraries installed on the system).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # set before huggingface_hub is imported


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: lerobot_check.py DATASET OUT.npz [pyav|torchcodec]", file=sys.stderr)
        return 2
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root, out = argv[:2]
    backend = argv[2] if len(argv) == 3 else "pyav"
    ds = LeRobotDataset("local/rlkit-check", root=root, video_backend=backend)
    keys = list(ds.meta.video_keys)
    n = len(ds)
    saved: dict[str, np.ndarray] = {"items": np.array([0, n // 2, n - 1])}
    for i in saved["items"].tolist():
        item = ds[i]
        for key in keys:  # float (3, H, W) in [0, 1] -> uint8 (H, W, 3)
            frame = item[key].permute(1, 2, 0).numpy()
            saved[f"{i}/{key}"] = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
        for key in ("episode_index", "frame_index", "index", "action"):
            saved[f"{i}/{key}"] = item[key].numpy()
    np.savez(out, **saved)
    print(f"lerobot {ds.meta.info['codebase_version']} ({backend}): {n} frames, videos {keys}; "
          f"items {saved['items'].tolist()} -> {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
