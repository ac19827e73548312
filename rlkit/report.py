"""What the tools show and write about their results: the comparison table and ``eval.json``,
the learning-curve plot and videos of a driver.

Every file is written atomically (:func:`~rlkit.utils.atomic_path`). matplotlib (plots), Pillow
(.gif) and PyAV (.mp4) are imported only when a plot or video is written.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.envs.sim import RacingConfig
from rlkit.rollout import Driver, EvalResult, rollout
from rlkit.utils import atomic_path

__all__ = [
    "eval_payload",
    "format_eval_table",
    "save_video",
    "write_learning_curve_png",
    "write_video",
]


# ------------------------------------------------------------------ comparison
def format_eval_table(
    rows: Mapping[str, EvalResult | Mapping[str, Any]], *, markdown: bool = False
) -> str:
    """The comparison table, one row per driver: aligned text for the terminal, or with
    ``markdown`` a markdown table (the pipeline's ``summary.md``).

    ``rows`` holds :class:`EvalResult` or their dicts as saved in ``eval.json`` and
    ``result.json`` (NaN saved as null); a missing figure shows as ``-``.
    """
    head = ("driver", "return", "laps done", "lap time", "off track")
    body = []
    for name, r in rows.items():
        d = r.to_dict() if isinstance(r, EvalResult) else r
        body.append(
            (
                name,
                _cell(d["mean_return"], ".1f"),
                _cell(d["lap_rate"], ".1f", "%", scale=100),
                _cell(d["mean_lap_time"], ".2f", "s"),
                _cell(d["crash_rate"], ".1f", "%", scale=100),
            )
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    align = ("<10", ">9", ">10", ">9", ">10")
    lines = [" ".join(f"{c:{a}}" for c, a in zip(row, align, strict=True)) for row in (head, *body)]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _cell(value: float | None, spec: str, suffix: str = "", scale: float = 1.0) -> str:
    """One figure of the table; ``-`` for a missing one (None or NaN)."""
    if value is None or math.isnan(value):
        return "-"
    return f"{scale * value:{spec}}{suffix}"


def eval_payload(
    rows: dict[str, EvalResult], episodes: int, seed: int, stream: str = "eval"
) -> dict[str, Any]:
    """The content of ``eval.json``: the drivers evaluated on the same tracks (``episodes``
    tracks of ``stream``), then each driver's mean return as a fraction of the expert's."""
    payload: dict[str, Any] = {"episodes": episodes, "seed": seed, "seed_stream": stream}
    payload.update({name: r.to_dict() for name, r in rows.items()})
    expert = rows.get("expert")
    for name, r in rows.items():
        if expert is not None and name != "expert":
            ratio = r.mean_return / expert.mean_return if expert.mean_return else None
            payload[f"{name}_return_fraction_of_expert"] = ratio
    return payload


# ------------------------------------------------------------------ plots
def write_learning_curve_png(out: Path, rows: dict[str, EvalResult]) -> None:
    """``out/learning_curve.png`` from ``out/learning_curve.csv``: eval return vs env steps and
    vs wall time, the expert and BC of ``rows`` as horizontal lines."""
    curve = out / "learning_curve.csv"
    if not curve.is_file():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = list(csv.DictReader(curve.open()))
    steps = [int(r["env_steps"]) for r in data]
    wall = [float(r["wall_s"]) / 60 for r in data]
    ret = [float(r["mean_return"]) for r in data]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, x, label in ((axes[0], steps, "environment steps"), (axes[1], wall, "wall time (min)")):
        ax.plot(x, ret, marker="o", label="RL (eval)")
        for name, style in (("expert", "--"), ("bc", ":")):
            if name in rows:
                ax.axhline(
                    rows[name].mean_return,
                    linestyle=style,
                    color="gray" if name == "expert" else "tab:green",
                    label=name,
                )
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean return on held-out tracks")
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(out / "learning_curve.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------ video
def write_video(
    driver: Driver, env_config: RacingConfig, path: str | Path, seed: int, size: int = 256
) -> Path:
    """Render ``driver`` top-down on the first held-out track (``eval`` episode 0) until it
    completes a lap or its episode ends; ``.gif`` or ``.mp4``."""
    run = rollout(driver, env_config, seed, [0], "eval", render_size=size, until_lap=True)
    assert run.frames is not None
    return save_video(run.frames[0], Path(path), fps=round(1 / env_config.dt))


def save_video(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    """Write uint8 (H, W, 3) frames as ``path`` (.gif at half the frame rate, else H.264)."""
    if path.suffix != ".gif":
        try:
            import av
        except ImportError as e:
            raise ImportError("--video .mp4 needs PyAV: pip install av (or use a .gif)") from e
    with atomic_path(path) as tmp:
        if path.suffix == ".gif":
            from PIL import Image

            images = [Image.fromarray(f) for f in frames[::2]]  # 10 fps keeps the GIF small
            images[0].save(
                tmp, save_all=True, append_images=images[1:], duration=int(2000 / fps), loop=0
            )
        else:
            with av.open(str(tmp), mode="w") as container:
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
                stream.pix_fmt = "yuv420p"
                for f in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
    return path
