#!/usr/bin/env bash
# Run the test suite (installs what it needs into ./.venv first).
#   bash scripts/test.sh            # everything (the longest tests are marked slow)
#   bash scripts/test.sh -m "not slow" -x   # extra arguments go to pytest
# TEST_WORKERS (default 2) pytest-xdist workers of one thread each share the cores;
# TEST_WORKERS=0 runs the suite in one process with torch's default threads.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
workers=${TEST_WORKERS:-2}
# worksteal: a worker that runs out of tests takes pending ones from the other, so that the
# suite does not end with one worker alone on the long tests it was handed at the start.
dist=(); [ "$workers" -gt 0 ] && dist=(--dist worksteal)
python -m pytest -n "$workers" "${dist[@]}" "$@"
