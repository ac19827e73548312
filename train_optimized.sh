#!/usr/bin/env bash
# The whole rlkit pipeline in one command: collect -> BC -> RL (-> world model), timed.
#
#   ./train_optimized.sh [--quick] [--output RUN_DIR] [--with-world-model] [--cores N]
#                        [--collect-workers N] [--bc-workers N] [--rl-envs N] [-- FLAGS...]
#   ./train_optimized.sh --resume RUN_DIR
#   ./train_optimized.sh --help
#
# Detects the cores with nproc (override: --cores or RLKIT_CORES, 1 to 4096), derives the
# worker counts with the seeds' formulas (collection = cores - 1, min 1, cap 12; BC loader =
# cores / 2, min 1, cap 8; RL subprocess envs = cores - 1, min 2, cap 8; each overridable by
# flag or environment variable: RLKIT_COLLECT_WORKERS, RLKIT_BC_WORKERS, RLKIT_RL_ENVS),
# installs rlkit into the current Python ($PYTHON, default python) with scripts/install.sh if
# `import rlkit` fails, then runs the stages into runs/<timestamp>/ and writes summary.json
# and summary.md there. Flags after -- go to every stage that has them.
# --help never installs anything: with rlkit importable it prints the full help, else this.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

for arg in "$@"; do
  [ "$arg" = "--" ] && break
  if [ "$arg" = "-h" ] || [ "$arg" = "--help" ]; then
    if "$PY" -c "import rlkit.pipeline" >/dev/null 2>&1; then
      exec "$PY" -m rlkit.pipeline --help
    fi
    usage
    echo "(rlkit is not installed in $PY yet: the first run without --help installs it)"
    exit 0
  fi
done

if ! "$PY" -c "import rlkit" >/dev/null 2>&1; then
  echo "rlkit is not installed in $("$PY" -c 'import sys; print(sys.executable)'): installing"
  ./scripts/install.sh
fi

# the core count: --cores > RLKIT_CORES (read and checked by the pipeline) > nproc
if [ -z "${RLKIT_CORES:-}" ]; then
  set -- --cores "$(nproc)" "$@"
fi
exec "$PY" -m rlkit.pipeline "$@"
