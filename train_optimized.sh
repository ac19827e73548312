#!/usr/bin/env bash
# The whole rlkit pipeline with worker counts picked from the machine's cores.
#
#   ./train_optimized.sh [--episodes N] [--output DIR] [--seed S]
#
# Detects cores with nproc, picks worker counts (the seeds' table: collection workers =
# cores - 1, min 1, cap 12), installs rlkit into the current Python if `import rlkit`
# fails, runs each stage and prints the measured wall time of every stage it ran.
# Stages available so far: demonstration collection (BC, RL follow as they land).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}

EPISODES=100
OUTPUT=runs/optimized
SEED=0
while [ $# -gt 0 ]; do
  case "$1" in
    --episodes) EPISODES=$2; shift 2 ;;
    --output) OUTPUT=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "train_optimized.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if ! "$PY" -c "import rlkit" >/dev/null 2>&1; then
  ./scripts/install.sh
fi

CORES=$(nproc)
COLLECT_WORKERS=$(( CORES - 1 )); [ "$COLLECT_WORKERS" -lt 1 ] && COLLECT_WORKERS=1
[ "$COLLECT_WORKERS" -gt 12 ] && COLLECT_WORKERS=12
echo "cores: $CORES -> collection workers: $COLLECT_WORKERS"

declare -a STAGES=() TIMES=()
run_stage() {  # name, command...
  local name=$1; shift
  echo; echo "== $name: $*"
  local t0 t1
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  STAGES+=("$name"); TIMES+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')")
}

mkdir -p "$OUTPUT"
run_stage "collect" "$PY" collect_demonstrations.py --episodes "$EPISODES" \
  --workers "$COLLECT_WORKERS" --seed "$SEED" --output "$OUTPUT/demos" --overwrite

echo; echo "stage        wall time (s)"
total=0
for i in "${!STAGES[@]}"; do
  printf "%-12s %8s\n" "${STAGES[$i]}" "${TIMES[$i]}"
  total=$(awk -v a="$total" -v b="${TIMES[$i]}" 'BEGIN{print a+b}')
done
printf "%-12s %8.1f\n" "total" "$total"
