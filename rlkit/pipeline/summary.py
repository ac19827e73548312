"""The pipeline's summary: measured wall time, throughput and result of every stage
(``summary.json``) and the same as markdown tables (``summary.md``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlkit.pipeline.stages import Plan, parallelism, route_passthrough
from rlkit.report import format_eval_table, label_policies
from rlkit.rl.seeds import aggregate_markdown
from rlkit.utils import RESULT_FILE, json_ready

__all__ = ["build_summary", "summary_markdown"]


def _read_result(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _stage_figures(name: str, r: dict[str, Any]) -> tuple[str, str]:
    """(throughput, result) text of one stage from its result.json."""
    if not r:
        return "-", "-"
    if name == "collect":
        fps = r["frames"] / r["wall_s"] if r.get("wall_s") else float("nan")
        return (
            f"{r['episodes_per_s']:.1f} episodes/s ({fps:,.0f} frames/s)" + _on_ray(r),
            f"{r['episodes']} episodes, {r['frames']:,} frames, {100 * r['lap_rate']:.0f} % lapped",
        )
    if name == "bc":
        return (
            f"{r['samples_per_s']:,.0f} samples/s ({r['loader']}, {r['device']})",
            f"{r['epochs_run']} epochs, best val loss {r['best_val_loss']:.4f}",
        )
    if name == "rl" and "aggregate" in r:  # --seeds
        speed = r["aggregate"]["metrics"]["steps_per_s"]["mean"]
        return (
            f"{speed:,.0f} env-steps/s per seed, {r['parallel']} seeds at once" + _on_ray(r),
            f"{len(r['seeds'])} seeds",
        )
    if name == "rl":
        return f"{r['steps_per_s']:,.0f} env-steps/s", f"{r['timesteps']:,} env steps"
    if name == "world_model":
        ret = "-" if r["eval_return"] is None else f"{r['eval_return']:.0f}"
        rnd = "-" if r["random_return"] is None else f"{r['random_return']:.0f}"
        return (
            f"{r['batches_per_s']:.2f} train steps/s ({r['device']})",
            f"{r['iterations']} iterations, {r['episodes']} episodes, "
            f"planner return {ret} (random {rnd})",
        )
    return "-", "-"


def _on_ray(r: dict[str, Any]) -> str:
    """`` on Ray: N nodes, C CPUs`` for a stage that ran on a Ray cluster, else ''."""
    c = r.get("cluster")
    return f" on Ray: {c['nodes']} node(s), {c['cpus']} CPUs" if c else ""


def build_summary(plan: Plan) -> dict[str, Any]:
    rows = []
    for stage in plan.stage_list:
        state = plan.stages.get(stage.name, {})
        result = _read_result(plan.run_dir / stage.output)
        throughput, text = _stage_figures(stage.name, result)
        rows.append(
            {
                "stage": stage.name,
                "status": state.get("status", "not run"),
                "wall_s": state.get("wall_s"),
                "resumed": bool(state.get("resumed")),  # wall_s then covers the last attempt
                "throughput": throughput,
                "result": text,
                "log": state.get("log"),
                "details": result,
            }
        )
    rl_result = _read_result(plan.run_dir / "rl")
    rl = rl_result.get("eval") or {}
    if not rl and not rl_result.get("aggregate"):  # no RL stage finished: BC's, if any
        rl = _read_result(plan.run_dir / "bc").get("eval") or {}
    return json_ready(
        {
            "run_dir": plan.run_dir,
            "cores": plan.cores,
            "parallelism": parallelism(plan, route_passthrough(plan.passthrough, plan.stage_list)),
            "workers": plan.workers,
            "worker_sources": plan.worker_sources,
            "preset": "quick" if plan.quick else "default",
            "passthrough": plan.passthrough,
            "stages": rows,
            "total_wall_s": sum(r["wall_s"] or 0.0 for r in rows),
            "evaluation": rl,
            "policies": rl_result.get("policies") or {},
            "seeds": rl_result.get("aggregate"),
            "files": {
                name: str(plan.run_dir / name)
                for name in ("learning_curve.png", "learning_curves.png", "lap.gif")
                if (plan.run_dir / name).is_file()
            },
        }
    )


def summary_markdown(s: dict[str, Any]) -> str:
    lines = [
        f"# rlkit run {Path(s['run_dir']).name}",
        "",
        f"{s['cores']} cores, preset {s['preset']}; "
        + "; ".join(" ".join(line.split()) for line in s["parallelism"])
        + ".",
        "",
        "| stage | wall time | throughput | result |",
        "|---|---:|---|---|",
    ]
    for r in s["stages"]:
        wall = r["status"]
        if r["status"] == "done":
            wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.1f} s"
        wall += " (resumed: last attempt)" if r["resumed"] else ""
        lines.append(f"| {r['stage']} | {wall} | {r['throughput']} | {r['result']} |")
    lines.append(f"| **total** | **{s['total_wall_s']:.1f} s** | | |")
    ev = s["evaluation"]
    if ev:
        n = next(iter(ev.values()))["episodes"]
        order = ("expert", "bc", "rl_final", "rl_selected")
        rows = label_policies({k: ev[k] for k in order if k in ev}, s["policies"])
        table = format_eval_table(rows, markdown=True)
        what = (
            "test tracks (never used for training or selection)"
            if s["policies"]
            else ("held-out tracks")
        )
        lines += ["", f"Policies on the same {n} {what}:", "", table]
        if "rl_selected" in ev:
            lines += ["", "RL final: the policy at the end of training; RL selected: the "
                      "checkpoint with the best return on the validation tracks."]  # fmt: skip
    if s.get("seeds"):
        lines += ["", "RL across seeds: " + aggregate_markdown(s["seeds"])]
    if s["files"]:
        lines += ["", "Files: " + ", ".join(Path(p).name for p in s["files"].values())]
    return "\n".join(lines) + "\n"
