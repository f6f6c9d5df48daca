#!/usr/bin/env bash
# The one command for a lent GPU (docs/gpu.md): the CUDA checks and Table 1's ResNet-56 ->
# ResNet-20 row at the paper's full schedule, within --budget-s (default 540 s), writing
# exactly three files to OUT: gpu_check.json, gpu_check.log, records.tar.gz.
#
#   bash scripts/gpu_check.sh OUT            # on the GPU, with data/cifar10-jpeg.tar.gz carried
#   bash scripts/gpu_check.sh OUT --tiny     # the same flow on the CPU, a few iterations a run
#   bash scripts/gpu_check.sh OUT --help     # every option (scripts/gpu_check.py)
#
# PYTHON (default: python3) is the interpreter: the GPU machine's own, with torch installed.
set -uo pipefail
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
    if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
        cd "$(dirname "$0")/.." && exec "${PYTHON:-python3}" scripts/gpu_check.py --help
    fi
    echo "usage: bash scripts/gpu_check.sh OUT [--tiny] [--budget-s S] [...]" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
out=$(cd "$1" && pwd)
shift
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" -u scripts/gpu_check.py "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
