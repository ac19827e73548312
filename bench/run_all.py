"""Run every benchmark in ``bench/`` one after another and collect their JSON results.

Each benchmark runs as its own process (a quiet machine matters more than anything else:
nothing here runs in parallel) and writes ``bench/results/local/<name>.json`` (untracked);
``--write-results`` writes the tracked ``bench/results/<name>.json`` that the README quotes
instead, and ``--quick`` runs the smoke sizes into ``bench/results/quick/`` (untracked), so
the tracked figures change only when asked. At the end a table lists every benchmark with its
wall time and exit status, and ``run_all.json`` in the same folder records it.

Usage::

    python bench/run_all.py                      # the full figures (about an hour on 2 cores)
    python bench/run_all.py --write-results      # the same, updating bench/results/*.json
    python bench/run_all.py --quick              # a short pass (a few minutes)
    python bench/run_all.py --only env collect   # a subset
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import report_header, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
#: Run order: cheap and foundational first.
BENCHMARKS = ("env", "collect", "bc", "rl", "rl_guard", "world_model", "merge")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke sizes, results in results/quick/")
    p.add_argument(
        "--write-results",
        action="store_true",
        help="update the tracked bench/results/*.json (default: bench/results/local/)",
    )
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    p.add_argument("--keep-going", action="store_true", help="run the rest after a failure")
    args = p.parse_args()
    if args.quick and args.write_results:
        p.error("--quick figures mean nothing: they never replace the tracked results")
    out_dir = HERE / "results" / ("quick" if args.quick else "" if args.write_results else "local")
    t_start = time.perf_counter()
    rows = []
    for name in args.only or BENCHMARKS:
        script = HERE / f"bench_{name}.py"
        if not script.is_file():
            rows.append({"benchmark": name, "status": "missing", "wall_s": 0.0})
            continue
        out = out_dir / f"bench_{name}.json"
        cmd = [sys.executable, str(script), "--output", str(out)]
        cmd += ["--quick"] if args.quick else []
        print(f"\n== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.run(cmd).returncode
        rows.append(
            {
                "benchmark": name,
                "status": "ok" if code == 0 else f"failed (exit {code})",
                "wall_s": time.perf_counter() - t0,
                "json": str(out) if code == 0 else None,
            }
        )
        if code != 0 and not args.keep_going:
            break

    print(f"\n{'benchmark':<12} {'status':<18} {'wall s':>8}  results")
    print(f"{'-' * 12} {'-' * 18} {'-' * 8}  {'-' * 7}")
    for r in rows:
        shown = Path(r["json"]).relative_to(HERE.parent) if r.get("json") else "-"
        print(f"{r['benchmark']:<12} {r['status']:<18} {r['wall_s']:>8.1f}  {shown}")
    record = report_header("run_all", t_start)
    record["settings"] = {
        "quick": args.quick,
        "only": args.only,
        "write_results": args.write_results,
    }
    record["benchmarks"] = rows
    write_json(out_dir / "run_all.json", record)
    failed = [r for r in rows if r["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
