# Sourced by the GPU-lease scripts (bench/gpu_check.sh, bench/reproduce_cifar10.sh): relucut from this
# checkout with no install step (the GPU machine has no network), the python to use, and `gpu_env_report`,
# which prints what the machine has and makes torch importable (from wheels carried in .whl/ if need be).
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python   # this machine's venv (not carried)
else PY=python3; fi

gpu_env_report() {
  echo "== what this machine has"
  echo "python: $(command -v "$PY") ($("$PY" --version 2>&1))"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  if ! "$PY" -c "import torch" 2>/dev/null; then
    # no registry can be reached there: torch can only come as wheels carried in .whl/
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
}
