#!/usr/bin/env bash
# One command that checks this code on a device within a time budget (default 480 s on
# CUDA) and writes OUT/device_check.json and OUT/device_check.log:
#
#   bash scripts/device_check.sh OUT                       # --device cuda: fails loudly without a GPU
#   bash scripts/device_check.sh OUT --device cpu --quick  # the same checks, tiny, on the CPU
#   bash scripts/device_check.sh OUT --help                # every option (scripts/device_check.py)
#
# Checks: environment; teacher, paraphraser and every student method with default and
# fast flags; SIGKILL and resume; two-process NCCL (skipped, and said so, with fewer than
# two GPUs); scripts/benchmark.py; a timed FT student and the 64,000-iteration time.
# Exit status 0 when every check passed, 1 otherwise (the last line names the failures).
# PYTHON (default: python3) is the interpreter; no virtual environment is made or needed
# beyond an installed torch.  docs/device_check.md describes each check.
set -uo pipefail

if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
    if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
        cd "$(dirname "$0")/.." && exec "${PYTHON:-python3}" scripts/device_check.py --help
    fi
    echo "usage: bash scripts/device_check.sh OUT [--device cuda|cpu] [--budget-s S] [--quick] [...]" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
out=$(cd "$1" && pwd)
shift
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" -u scripts/device_check.py "$out" "$@" 2>&1 | tee "$out/device_check.log"
