#!/usr/bin/env bash
# The GPU check in one command (bench/gpu_check.py says what it measures).
#
#   bench/gpu_check.sh prepare   # here, beside ../shared/data: writes .gpu_data/ (~48 MiB, git-ignored)
#   bench/gpu_check.sh smoke     # here, CPU, tiny sizes: every code path; output in $TMPDIR, not bench/results
#   bench/gpu_check.sh [run]     # on the GPU machine, with .gpu_data carried: at most 8 minutes
#
# Extra arguments go to `gpu_check.py prepare|run` (e.g. --configs fp32,bf16). Results:
# bench/results/gpu_check.{json,md}, also copied into $OUT when that is set (the device tool's folder).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1
# relucut from this checkout, no install step: the GPU machine has no network, and its python3
# already holds torch, numpy, rich and typer.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

mode="${1:-run}"
[ $# -gt 0 ] && shift

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python   # this machine's venv (not carried)
else PY=python3; fi

case "$mode" in
  prepare) exec "$PY" bench/gpu_check.py prepare "$@" ;;
  smoke) OMP_NUM_THREADS=1 exec "$PY" bench/gpu_check.py run --smoke --threads 1 "$@" ;;
  run) ;;
  *) echo "usage: bench/gpu_check.sh [prepare|smoke|run] [args]" >&2; exit 2 ;;
esac

echo "== what this machine has"
echo "python: $(command -v "$PY") ($("$PY" --version 2>&1))"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if ! "$PY" -c "import torch" 2>/dev/null; then
  # No registry can be reached there: torch can only come as wheels carried in .whl/.
  if ls .whl/torch-*.whl >/dev/null 2>&1; then
    echo "torch is missing: installing the carried wheels from .whl/ into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 3
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
  else
    echo "torch is missing and there is no network: carry a CUDA torch as wheels in .whl/ (see the device README)" >&2
    exit 3
  fi
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available:', torch.cuda.is_available())"
if ! "$PY" -c "import relucut, numpy, rich" 2>/tmp/relucut-import.err; then
  echo "relucut does not import from src/ with this python:" >&2; cat /tmp/relucut-import.err >&2
  echo "(it needs torch, numpy, rich and typer; carry missing ones as wheels in .whl/)" >&2
  exit 3
fi
if [ ! -f .gpu_data/manifest.json ]; then
  echo "no .gpu_data/: run 'bench/gpu_check.sh prepare' on the data machine and carry .gpu_data" >&2
  exit 3
fi

echo "== measuring (measurements start within 400 s; hard stop at 470 s)"
timeout 470 "$PY" bench/gpu_check.py run "$@"
rc=$?
if [ -n "${OUT:-}" ]; then cp bench/results/gpu_check.json bench/results/gpu_check.md "$OUT"/ 2>/dev/null; fi
exit $rc
