#!/usr/bin/env bash
# Install rlkit into the current Python ($PYTHON, default python), editable, with the test
# extras when --dev is given:
#
#   1. only when `import torch` fails: pip install "$RLKIT_TORCH" (default torch==2.13.0),
#      from pip's configured index, or from $RLKIT_TORCH_INDEX when set (--index-url);
#   2. pip install -e ".[dev]" (or -e . without --dev); an installed torch is kept.
#
# Which torch build step 1 gets is whatever that index serves for the spec: on this
# project's machines a local CPU wheel (2.13.0+cpu); from PyPI on Linux x86-64 a CUDA build
# with several GB of nvidia-* wheels; on macOS and Windows a CPU build. For a CPU build
# anywhere use PyTorch's CPU index:
#   RLKIT_TORCH_INDEX=https://download.pytorch.org/whl/cpu ./scripts/install.sh
# (add RLKIT_TORCH=torch for the newest version there), and for a CUDA build the index of
# your CUDA version from pytorch.org's selector, or RLKIT_TORCH=torch from PyPI on Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
extras=""
case "${1:-}" in
  "") ;;
  --dev) extras="[dev]" ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "install: unknown argument '$1' (use --dev or nothing)" >&2; exit 2 ;;
esac

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  spec=${RLKIT_TORCH:-torch==2.13.0}
  if [ -n "${RLKIT_TORCH_INDEX:-}" ]; then
    echo "install: torch missing -> pip install $spec --index-url $RLKIT_TORCH_INDEX"
    "$PY" -m pip install --quiet "$spec" --index-url "$RLKIT_TORCH_INDEX"
  else
    echo "install: torch missing -> pip install $spec (from pip's configured index)"
    "$PY" -m pip install --quiet "$spec"
  fi
fi
"$PY" -m pip install --quiet -e ".${extras}"
echo "install: rlkit $("$PY" -c 'import rlkit; print(rlkit.__version__)') ready in $("$PY" -c 'import sys; print(sys.executable)')"
