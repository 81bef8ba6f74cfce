#!/usr/bin/env bash
# The full-scale CIFAR-10 reproduction in one command (bench/reproduce_cifar10.py says what it runs).
#
#   bench/reproduce_cifar10.sh prepare   # here, beside ../shared/data: .gpu_data/cifar10-part{1,2,3}, ~49 MiB each
#   bench/reproduce_cifar10.sh smoke     # here, CPU, made-up data, a 2-wide network: every code path
#   bench/reproduce_cifar10.sh [run]     # on the GPU machine, with the parts carried: about 7 minutes
#
# One part fits one 64 MiB transfer. The device tool keeps what earlier calls carried while the machine
# stays warm (it goes back after a short idle time: make the calls back to back), so: call 1 carries
# .gpu_data/cifar10-part2 (command: ls .gpu_data), call 2 .gpu_data/cifar10-part3, call 3
# .gpu_data/cifar10-part1 (it holds the 5,000 test images, so it comes last) and runs this script. The
# run trains on the parts present: part 1 alone 11,667 images (26 %), with part 2 28,334 (63 %), all
# three 45,000. Extra arguments go to
# `reproduce_cifar10.py run` (e.g. --time-budget 300). Results: bench/results/reproduce_cifar10.{json,md},
# rewritten after every run and also written into $OUT when that is set (the device tool's folder).
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"

mode="${1:-run}"
[ $# -gt 0 ] && shift

case "$mode" in
  prepare) exec "$PY" bench/reproduce_cifar10.py prepare "$@" ;;
  smoke) OMP_NUM_THREADS=1 exec "$PY" bench/reproduce_cifar10.py run --smoke "$@" ;;
  run) ;;
  *) echo "usage: bench/reproduce_cifar10.sh [prepare|smoke|run] [args]" >&2; exit 2 ;;
esac

gpu_env_report
ls -d .gpu_data/cifar10-part* 2>/dev/null || { echo "no .gpu_data/cifar10-part*: run 'prepare' here and carry the parts" >&2; exit 3; }

copy=()
[ -n "${OUT:-}" ] && copy=(--copy-to "$OUT")
echo "== reproducing (time budget 420 s unless --time-budget; hard stop at 540 s)"
timeout 540 "$PY" bench/reproduce_cifar10.py run "${copy[@]}" "$@"
