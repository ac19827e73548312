#!/usr/bin/env bash
# The whole rlkit pipeline with worker counts picked from the machine's cores.
#
#   ./train_optimized.sh [--quick] [--episodes N] [--epochs N] [--timesteps N]
#                        [--output DIR] [--seed S]
#
# Detects cores with nproc (override: RLKIT_CORES), derives worker counts with the seeds'
# formulas (collection workers = cores - 1, min 1, cap 12; BC loader workers = cores / 2,
# min 1, cap 8; RL subprocess envs = cores - 1, min 2, cap 8), installs rlkit into the current
# Python if `import rlkit` fails, then runs collect -> BC -> RL into one run folder and
# prints the measured wall time of every stage. --quick: a small run of a few minutes.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}

EPISODES=100
EPOCHS=50
TIMESTEPS=500000
SEED=0
OUTPUT=""

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) EPISODES=20; EPOCHS=10; TIMESTEPS=100000; shift ;;
    --episodes) EPISODES=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --timesteps) TIMESTEPS=$2; shift 2 ;;
    --output) OUTPUT=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "train_optimized.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
OUTPUT=${OUTPUT:-runs/$(date +%Y%m%d-%H%M%S)}

if ! "$PY" -c "import rlkit" >/dev/null 2>&1; then
  ./scripts/install.sh
fi

CORES=${RLKIT_CORES:-$(nproc)}
clamp() { local v=$1 lo=$2 hi=$3; [ "$v" -lt "$lo" ] && v=$lo; [ "$v" -gt "$hi" ] && v=$hi; echo "$v"; }
COLLECT_WORKERS=$(clamp $(( CORES - 1 )) 1 12)
BC_WORKERS=$(clamp $(( CORES / 2 )) 1 8)
RL_ENVS=$(clamp $(( CORES - 1 )) 2 8)
echo "cores: $CORES -> collection workers $COLLECT_WORKERS, BC loader workers $BC_WORKERS" \
     "(used by --loader dataloader), RL subprocess envs $RL_ENVS (the default batched env" \
     "steps 16 cars in one process)"
echo "run folder: $OUTPUT"

declare -a STAGES=() TIMES=()
run_stage() {  # name, command...
  local name=$1; shift
  echo; echo "== $name: $*"
  local t0 t1
  t0=$(date +%s.%N)
  if ! "$@" 2>&1 | tee "$OUTPUT/$name.log"; then
    echo "train_optimized.sh: stage '$name' failed; log: $OUTPUT/$name.log" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  STAGES+=("$name"); TIMES+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')")
}
set -o pipefail

mkdir -p "$OUTPUT"
run_stage collect "$PY" collect_demonstrations.py --episodes "$EPISODES" \
  --workers "$COLLECT_WORKERS" --seed "$SEED" --output "$OUTPUT/demos" --overwrite
run_stage bc "$PY" train_bc.py --data "$OUTPUT/demos" --output "$OUTPUT/bc" \
  --epochs "$EPOCHS" --workers "$BC_WORKERS" --seed "$SEED" --overwrite
run_stage rl "$PY" train_rl.py --init-from "$OUTPUT/bc" --timesteps "$TIMESTEPS" \
  --seed "$SEED" --output "$OUTPUT/rl" --overwrite --video "$OUTPUT/rl/lap.gif"

echo; echo "stage        wall time (s)"
total=0
for i in "${!STAGES[@]}"; do
  printf "%-12s %8s\n" "${STAGES[$i]}" "${TIMES[$i]}"
  total=$(awk -v a="$total" -v b="${TIMES[$i]}" 'BEGIN{print a+b}')
done
printf "%-12s %8.1f\n" "total" "$total"
echo "results: $OUTPUT/bc/eval.json, $OUTPUT/rl/eval.json, $OUTPUT/rl/learning_curve.png, $OUTPUT/rl/lap.gif"
