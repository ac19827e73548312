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
    "format_aggregate_table",
    "format_eval_table",
    "label_policies",
    "save_video",
    "write_learning_curve_png",
    "write_seed_curves_png",
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
    width = max(10, *(len(row[0]) for row in body))
    align = (f"<{width}", ">9", ">10", ">9", ">10")
    lines = [" ".join(f"{c:{a}}" for c, a in zip(row, align, strict=True)) for row in (head, *body)]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def label_policies(
    rows: Mapping[str, Any], policies: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """``rows`` keyed by what a reader needs to tell the RL policies apart: ``rl_final`` ->
    ``RL final (500,000 steps)``, ``rl_selected`` -> ``RL selected (275,000 steps)``; other
    rows keep their names (``policies`` as in ``eval.json``)."""
    out = {}
    for name, row in rows.items():
        info = policies.get(name)
        if info is not None:
            kind = name.removeprefix("rl_")
            name = f"RL {kind} ({info['env_steps']:,} steps)"
        out[name] = row
    return out


def _cell(value: float | None, spec: str, suffix: str = "", scale: float = 1.0) -> str:
    """One figure of the table; ``-`` for a missing one (None or NaN)."""
    if value is None or math.isnan(value):
        return "-"
    return f"{scale * value:{spec}}{suffix}"


def eval_payload(
    rows: dict[str, EvalResult], episodes: int, seed: int, stream: str = "test"
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


def format_aggregate_table(rows: Mapping[str, Mapping[str, Any]], *, markdown: bool = False) -> str:
    """Figures across seeds, one row per metric (:func:`rlkit.aggregate.summarize` dicts):
    mean, interquartile mean, the 95 % CI of the row's statistic, and every seed's value."""
    head = ("metric", "mean", "IQM", "95% CI", "per seed")
    body = []
    for name, r in rows.items():
        stat = r["statistic"]
        ci = f"{_num(r['ci_low'])} .. {_num(r['ci_high'])}"
        if stat != "mean":
            ci = f"{stat} {_num(r[stat])}: {ci}"
        values = ", ".join(_num(v) for v in r["values"])
        body.append((name, _num(r["mean"]), _num(r["iqm"]), ci, values))
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---|---|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(4)]
    align = [f"<{widths[0]}", f">{widths[1]}", f">{widths[2]}", f"<{widths[3]}"]
    lines = ["  ".join(f"{c:{a}}" for c, a in zip(row[:4], align, strict=True)) + "  " + row[4]
             for row in (head, *body)]  # fmt: skip
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _num(value: float | None) -> str:
    """A figure of the aggregate table: 4 significant digits; ``never`` for None/inf."""
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return "never"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


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


def write_seed_curves_png(
    path: Path, curves: Mapping[int, Path], expert_return: float | None = None
) -> None:
    """Validation return vs env steps of every seed (thin lines), their mean and its 95 %
    bootstrap CI at each evaluation all seeds reached, and the expert on the same tracks."""
    import matplotlib

    from rlkit.aggregate import bootstrap_ci

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = {}
    for seed, curve in curves.items():
        if curve.is_file():
            rows = list(csv.DictReader(curve.open()))
            data[seed] = {int(r["env_steps"]): float(r["mean_return"]) for r in rows}
    if not data:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for seed, points in data.items():
        ax.plot(list(points), list(points.values()), lw=0.8, alpha=0.6, label=f"seed {seed}")
    # evaluations land on the same env steps in every seed (the same --eval-every)
    common = sorted(set.intersection(*(set(p) for p in data.values())))
    if common:
        mean = [float(np.mean([p[x] for p in data.values()])) for x in common]
        band = [bootstrap_ci([p[x] for p in data.values()], np.mean) for x in common]
        ax.plot(common, mean, color="black", lw=2, label=f"mean of {len(data)} seeds")
        ax.fill_between(common, [b[0] for b in band], [b[1] for b in band], color="black",
                        alpha=0.15, label="95% CI of the mean")  # fmt: skip
    if expert_return is not None:
        ax.axhline(expert_return, ls="--", color="gray", label="expert")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean return on the validation tracks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


# ------------------------------------------------------------------ video
def write_video(
    driver: Driver, env_config: RacingConfig, path: str | Path, seed: int, size: int = 256
) -> Path:
    """Render ``driver`` top-down on the first held-out track (``test`` episode 0) until it
    completes a lap or its episode ends; ``.gif`` or ``.mp4``."""
    run = rollout(driver, env_config, seed, [0], "test", render_size=size, until_lap=True)
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
