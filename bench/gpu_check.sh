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
source "$(dirname "$0")/gpu_env.sh"

mode="${1:-run}"
[ $# -gt 0 ] && shift

case "$mode" in
  prepare) exec "$PY" bench/gpu_check.py prepare "$@" ;;
  smoke) OMP_NUM_THREADS=1 exec "$PY" bench/gpu_check.py run --smoke --threads 1 "$@" ;;
  run) ;;
  *) echo "usage: bench/gpu_check.sh [prepare|smoke|run] [args]" >&2; exit 2 ;;
esac

gpu_env_report
if [ ! -f .gpu_data/manifest.json ]; then
  echo "no .gpu_data/: run 'bench/gpu_check.sh prepare' on the data machine and carry .gpu_data" >&2
  exit 3
fi

echo "== measuring (measurements start within 400 s; hard stop at 470 s)"
timeout 470 "$PY" bench/gpu_check.py run "$@"
rc=$?
if [ -n "${OUT:-}" ]; then cp bench/results/gpu_check.json bench/results/gpu_check.md "$OUT"/ 2>/dev/null; fi
exit $rc
