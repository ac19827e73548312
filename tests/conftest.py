"""Shared test settings and data: tiny tool settings, one LeRobot dataset builder, demos.

- ``BC_TINY`` / ``RL_TINY`` / ``WM_TINY`` / ``PIPELINE_TINY``: the smallest settings each tool
  trains with in seconds (``as_argv`` turns a settings dict into CLI flags).
- ``Spec`` + ``build``: the one hand-written LeRobot dataset builder (v2.1: pandas-written
  ``list<double>`` vectors, one parquet per episode, ``episodes_stats.jsonl``, per-episode mp4;
  v3.0: ``fixed_size_list`` vectors, several episodes per file, ``stats/*`` columns, one mp4
  holding several episodes). Videos are real (tiny) mp4 files made with PyAV.
- Session fixtures: ``dataset`` (``build`` once per spec), ``demos`` (collected expert demos)
  and ``bc_export`` (a BC run trained on them). They are shared by every test of the session:
  read them, never change them; a test that damages one copies it first
  (``shutil.copytree``).

``tests/`` is on ``sys.path`` (pytest's rootdir conftest), so modules import the names they
need with ``from conftest import Spec, build``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlkit.lerobot import aggregate_stats, compute_stats
from rlkit.lerobot.stats import QUANTILES

# ----------------------------------------------------------------------------- tiny settings
#: BC: a small MLP, no evaluation rollouts (keys are BCConfig fields)
BC_TINY: dict[str, Any] = {"hidden": [32, 32], "batch_size": 128, "eval_episodes": 0}
#: RL fine-tuning: 4 envs of 100 steps, a small buffer (keys are RLConfig fields)
RL_TINY: dict[str, Any] = {
    "envs": 4,
    "max_episode_steps": 100,
    "eval_episodes": 2,
    "batch_size": 64,
    "buffer_size": 5000,
}
#: world model: 8 actions per episode (action repeat 2), a model of a few hundred weights
WM_TINY = [
    "--max-episode-steps", "16", "--action-repeat", "2", "--seq-len", "4", "--batch-size", "3",
    "--train-steps", "2", "--seed-episodes", "2", "--cnn-depth", "2", "--deter-size", "8",
    "--stoch-size", "3", "--hidden-size", "8", "--plan-horizon", "3", "--candidates", "8",
    "--top-k", "2", "--cem-iterations", "2", "--threads", "1", "--no-tensorboard",
]  # fmt: skip
#: the whole pipeline (collect -> BC -> RL) in seconds; add --eval-every / --timesteps
PIPELINE_TINY = [
    "--episodes", "3", "--max-steps", "100", "--epochs", "2", "--eval-episodes", "2",
    "--max-episode-steps", "100", "--n-steps", "32", "--test-episodes", "2",
]  # fmt: skip
#: the demos fixture: 6 expert episodes of 150 steps (the expert neither crashes nor stops
#: early: every episode is cut by the time limit)
DEMO_EPISODES, DEMO_STEPS = 6, 150


def as_argv(settings: dict[str, Any]) -> list[str]:
    """``{"batch_size": 64, "hidden": [16, 16]}`` -> ``["--batch-size", "64", "--hidden",
    "16", "16"]`` (a True bool is a bare flag)."""
    argv: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list | tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> None:
    """Poll ``cond()`` every 20 ms until it holds: a test kills or interrupts a child after an
    event it can observe (a file appearing, a log row), never after a fixed delay that a
    loaded machine could make too short. Fails if the child exits first or after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"exited early ({proc.returncode}): {err}")
        assert time.monotonic() < deadline, "timed out waiting for the event"
        time.sleep(0.02)


# ----------------------------------------------------------------------------- dataset builder
FPS = 10
INDEX_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
VIDEO_KEY = "observation.images.cam"
IMAGE_KEY = "observation.images.wrist"


@dataclass
class Spec:
    """A synthetic source: episode lengths, vector dims, tasks, optional image/video."""

    lengths: list[int]
    dims: dict[str, int] = field(default_factory=lambda: {"observation.state": 3, "action": 2})
    tasks: list[str] = field(default_factory=lambda: ["stack"])
    episode_tasks: list[list[int]] | None = None  # per episode; several = multi-task episode
    names: dict[str, Any] = field(default_factory=dict)
    image_shape: list[int] | None = None  # adds an `image` feature stored in the parquet
    video: bool = False  # adds a `video` feature with real mp4 files
    fps: int = FPS
    seed: int = 0
    dtype: str = "float32"  # of the vector features, as declared and as stored
    #: action = action_of_state(observation.state): a target a policy can learn (BC tests)
    action_of_state: Callable[[np.ndarray], np.ndarray] | None = None


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode ``(n, H, W, 3)`` uint8 frames as an mp4 (mpeg4: in every PyAV build)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        stream = c.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)


def video_frames(seed: int, episode: int, n: int) -> np.ndarray:
    level = (37 * seed + 53 * episode) % 200 + 20  # a distinct grey per (source, episode)
    return np.full((n, 16, 16, 3), level, dtype=np.uint8)


def build(root: Path, version: str, spec: Spec) -> dict[str, Any]:
    """Write a source dataset by hand; return its ground truth (columns, tasks per row, ...)."""
    rng = np.random.default_rng(spec.seed)
    n_eps, n = len(spec.lengths), sum(spec.lengths)
    bounds = np.concatenate([[0], np.cumsum(spec.lengths)]).astype(np.int64)
    ep_tasks = spec.episode_tasks or [[0]] * n_eps
    cols: dict[str, np.ndarray] = {
        k: (rng.standard_normal((n, d)) * (1 + spec.seed) + spec.seed).astype(spec.dtype)
        for k, d in spec.dims.items()
    }
    if spec.action_of_state is not None:
        cols["action"] = spec.action_of_state(cols["observation.state"]).astype(spec.dtype)
    empty = [np.zeros(0, np.int64)]  # np.concatenate needs one array even for 0 episodes
    frame_index = np.concatenate(empty + [np.arange(m) for m in spec.lengths]).astype(np.int64)
    task_index = np.concatenate(
        empty
        + [
            np.array(ep_tasks[e])[np.arange(m) * len(ep_tasks[e]) // m]
            for e, m in enumerate(spec.lengths)
        ]
    ).astype(np.int64)
    cols |= {
        "timestamp": (frame_index / spec.fps).astype(np.float32),
        "frame_index": frame_index,
        "episode_index": np.repeat(np.arange(n_eps), spec.lengths).astype(np.int64),
        "index": np.arange(n, dtype=np.int64),
        "task_index": task_index,
    }
    images = [bytes(rng.integers(0, 256, 12, dtype=np.uint8)) for _ in range(n)]
    img_stats = {  # made-up per-episode image stats, (3,1,1) in [0,1]; pixels are not decoded
        "mean": rng.uniform(0.2, 0.8, (n_eps, 3, 1, 1)),
        "std": rng.uniform(0.05, 0.2, (n_eps, 3, 1, 1)),
        "min": np.zeros((n_eps, 3, 1, 1)),
        "max": np.ones((n_eps, 3, 1, 1)),
        "count": np.array(spec.lengths, dtype=np.int64)[:, None],
    }
    features: dict[str, Any] = {
        k: {"dtype": spec.dtype, "shape": [d], "names": spec.names.get(k)}
        for k, d in spec.dims.items()
    }
    if spec.image_shape:
        names = ["channels", "height", "width"] if spec.image_shape[0] == 3 else None
        features[IMAGE_KEY] = {"dtype": "image", "shape": spec.image_shape, "names": names}
    if spec.video:
        features[VIDEO_KEY] = {
            "dtype": "video",
            "shape": [16, 16, 3],
            "names": ["height", "width", "channel"],
            "info": {"video.fps": spec.fps, "video.codec": "mpeg4", "video.pix_fmt": "yuv420p"},
        }
    features |= {"timestamp": {"dtype": "float32", "shape": [1], "names": None}}
    features |= {k: {"dtype": "int64", "shape": [1], "names": None} for k in INDEX_KEYS[1:]}
    visual = [k for k in (IMAGE_KEY, VIDEO_KEY) if k in features]
    tabular = [k for k in features if k not in visual]

    def ep_stats(e: int) -> dict[str, dict[str, np.ndarray]]:
        out = {k: compute_stats(cols[k][bounds[e] : bounds[e + 1]]) for k in tabular}
        for k in visual:
            out[k] = {s: v[e] for s, v in img_stats.items()}
        return out

    (root / "meta").mkdir(parents=True)
    info: dict[str, Any] = {
        "codebase_version": version,
        "robot_type": "arm",
        "total_episodes": n_eps,
        "total_frames": n,
        "total_tasks": len(spec.tasks),
        "chunks_size": 1000,
        "fps": spec.fps,
        "splits": {"train": f"0:{n_eps}"},
        "features": features,
    }
    if version == "v2.1":
        for e in range(n_eps):
            lo, hi = bounds[e], bounds[e + 1]
            df = pd.DataFrame(
                {k: list(cols[k][lo:hi].astype(np.float64)) for k in spec.dims}
                | {k: cols[k][lo:hi] for k in INDEX_KEYS}
            )
            if spec.image_shape:
                df[IMAGE_KEY] = [{"bytes": b, "path": None} for b in images[lo:hi]]
            path = root / f"data/chunk-000/episode_{e:06d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            df.to_parquet(path)  # pandas: list<double> vectors, no huggingface metadata
            if spec.video:
                write_mp4(
                    root / f"videos/chunk-000/{VIDEO_KEY}/episode_{e:06d}.mp4",
                    video_frames(spec.seed, e, hi - lo),
                    spec.fps,
                )
        lines = [
            {"episode_index": e, "tasks": [spec.tasks[t] for t in ep_tasks[e]], "length": m}
            for e, m in enumerate(spec.lengths)
        ]
        (root / "meta/episodes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        tasks = [{"task_index": i, "task": t} for i, t in enumerate(spec.tasks)]
        (root / "meta/tasks.jsonl").write_text("".join(json.dumps(x) + "\n" for x in tasks))
        st_lines = [
            {
                "episode_index": e,
                "stats": {
                    k: {s: np.asarray(v).tolist() for s, v in st.items() if s not in QUANTILES}
                    for k, st in ep_stats(e).items()
                },
            }
            for e in range(n_eps)
        ]
        (root / "meta/episodes_stats.jsonl").write_text(
            "".join(json.dumps(x) + "\n" for x in st_lines)
        )
        info |= {
            "total_videos": n_eps if spec.video else 0,
            "total_chunks": 1,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": (
                "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
                if spec.video
                else None
            ),
        }
    else:
        arrays = {
            k: pa.FixedSizeListArray.from_arrays(cols[k].reshape(-1), d)
            for k, d in spec.dims.items()
        } | {k: pa.array(cols[k]) for k in INDEX_KEYS}
        if spec.image_shape:
            arrays[IMAGE_KEY] = pa.array(
                [{"bytes": b, "path": None} for b in images],
                type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            )
        hf = {
            k: {
                "feature": {"dtype": spec.dtype, "_type": "Value"},
                "length": d,
                "_type": "Sequence",
            }
            for k, d in spec.dims.items()
        }
        table = pa.table(arrays).replace_schema_metadata(
            {"huggingface": json.dumps({"info": {"features": hf}})}
        )
        # two data files: episodes [0, half) and [half, E), one row group per episode
        half = max(1, n_eps // 2)
        file_of = np.array([0 if e < half else 1 for e in range(n_eps)])
        for f in sorted(set(file_of.tolist())):
            path = root / f"data/chunk-000/file-{f:03d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            eps = np.flatnonzero(file_of == f)
            with pq.ParquetWriter(path, table.schema) as w:
                for e in eps:
                    w.write_table(table.slice(bounds[e], spec.lengths[e]))
        ep_cols: dict[str, Any] = {
            "episode_index": np.arange(n_eps),
            "tasks": [[spec.tasks[t] for t in ep_tasks[e]] for e in range(n_eps)],
            "length": np.array(spec.lengths),
            "data/chunk_index": np.zeros(n_eps, dtype=np.int64),
            "data/file_index": file_of,
            "dataset_from_index": bounds[:-1],
            "dataset_to_index": bounds[1:],
        }
        if spec.video:  # one mp4 per data file, its episodes back to back
            t_from = np.zeros(n_eps)
            for f in sorted(set(file_of.tolist())):
                eps = np.flatnonzero(file_of == f)
                frames = np.concatenate([video_frames(spec.seed, e, spec.lengths[e]) for e in eps])
                write_mp4(root / f"videos/{VIDEO_KEY}/chunk-000/file-{f:03d}.mp4", frames, spec.fps)
                starts = np.concatenate([[0], np.cumsum([spec.lengths[e] for e in eps])[:-1]])
                t_from[eps] = starts / spec.fps
            ep_cols |= {
                f"videos/{VIDEO_KEY}/chunk_index": np.zeros(n_eps, dtype=np.int64),
                f"videos/{VIDEO_KEY}/file_index": file_of,
                f"videos/{VIDEO_KEY}/from_timestamp": t_from,
                f"videos/{VIDEO_KEY}/to_timestamp": t_from + np.array(spec.lengths) / spec.fps,
            }
        all_stats = [ep_stats(e) for e in range(n_eps)]
        ep_table = pa.table(ep_cols)
        for k in all_stats[0]:
            for s in all_stats[0][k]:
                values = [np.asarray(st[k][s]).tolist() for st in all_stats]
                ep_table = ep_table.append_column(f"stats/{k}/{s}", pa.array(values))
        path = root / "meta/episodes/chunk-000/file-000.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(ep_table, path)
        pd.DataFrame(
            {"task_index": np.arange(len(spec.tasks))}, index=pd.Index(spec.tasks, name="task")
        ).to_parquet(root / "meta/tasks.parquet")
        stats = {k: aggregate_stats([st[k] for st in all_stats]) for k in all_stats[0]}
        (root / "meta/stats.json").write_text(
            json.dumps(
                {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in stats.items()}
            )
        )
        info |= {
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": (
                "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
                if spec.video
                else None
            ),
        }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return {
        "cols": cols,
        "bounds": bounds,
        "row_tasks": [spec.tasks[t] for t in task_index],
        "ep_tasks": [[spec.tasks[t] for t in ts] for ts in ep_tasks],
        "images": images,
        "img_stats": img_stats,
        "spec": spec,
    }


# ----------------------------------------------------------------------------- session fixtures
@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Callable[[str, Spec], tuple[Path, dict[str, Any]]]:
    """``dataset(version, spec) -> (root, truth)``: ``build`` once per (version, spec) per
    session. Read-only: a test that changes files builds its own with ``build(tmp_path, ...)``."""
    made: dict[str, tuple[Path, dict[str, Any]]] = {}

    def make(version: str, spec: Spec) -> tuple[Path, dict[str, Any]]:
        key = f"{version} {spec!r}"
        if key not in made:
            root = tmp_path_factory.mktemp("dataset") / version
            made[key] = root, build(root, version, spec)
        return made[key]

    return make


@pytest.fixture(scope="session")
def demos(tmp_path_factory) -> Path:
    """Expert demonstrations (LeRobot v3.0), shared read-only by the BC, RL and fault tests."""
    from rlkit.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("demos") / "demos"
    cfg = CollectConfig(episodes=DEMO_EPISODES, workers=1, max_steps=DEMO_STEPS, output=str(out))
    collect(cfg, progress=False)
    return out


@pytest.fixture(scope="session")
def bc_export(tmp_path_factory, demos: Path) -> Path:
    """A finished train_bc run on ``demos`` (3 epochs, BC_TINY): what RL starts from."""
    from rlkit.bc import BCConfig, train_bc

    out = tmp_path_factory.mktemp("bc") / "bc"
    train_bc(BCConfig(data=str(demos), output=str(out), epochs=3, **BC_TINY), progress=False)
    return out
