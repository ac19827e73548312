#!/usr/bin/env bash
# The whole rlkit pipeline in one command: collect -> BC -> RL (-> world model), timed.
#
#   ./train_optimized.sh [--quick] [--output RUN_DIR] [--with-world-model]
#                        [--collect-workers N] [--bc-workers N] [--rl-envs N] [-- FLAGS...]
#   ./train_optimized.sh --resume RUN_DIR
#
# Detects the cores with nproc (override: RLKIT_CORES), derives the worker counts with the
# seeds' formulas (collection = cores - 1, min 1, cap 12; BC loader = cores / 2, min 1, cap 8;
# RL subprocess envs = cores - 1, min 2, cap 8; each overridable by flag or environment
# variable), installs rlkit into the current Python if `import rlkit` fails, then runs the
# stages into runs/<timestamp>/ and writes summary.json and summary.md there.
# Full help: ./train_optimized.sh --help
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}

if ! "$PY" -c "import rlkit" >/dev/null 2>&1; then
  echo "rlkit is not installed in $("$PY" -c 'import sys; print(sys.executable)'): installing"
  ./scripts/install.sh
fi

CORES=${RLKIT_CORES:-$(nproc)}
exec "$PY" -m rlkit.pipeline --cores "$CORES" "$@"
