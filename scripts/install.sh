#!/usr/bin/env bash
# Install rlkit into the current Python (editable), with the test extras when --dev is given.
#
# torch first: a bare `pip install torch` pulls several GB of CUDA wheels. When torch is
# missing we install $RLKIT_TORCH (default torch==2.13.0, a CPU build on this project's
# machines); set RLKIT_TORCH=torch (or any pip spec) for a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "install: torch missing -> pip install ${RLKIT_TORCH:-torch==2.13.0}"
  "$PY" -m pip install --quiet "${RLKIT_TORCH:-torch==2.13.0}"
fi
"$PY" -m pip install --quiet -e ".${extras}"
echo "install: rlkit $("$PY" -c 'import rlkit; print(rlkit.__version__)') ready in $("$PY" -c 'import sys; print(sys.executable)')"
