#!/usr/bin/env bash
# Run the test suite (installs what it needs into ./.venv first).
#   bash scripts/test.sh            # everything, ~10 minutes on 2 CPU cores
#   bash scripts/test.sh -m "not slow" -x   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
python -m pytest "$@"
