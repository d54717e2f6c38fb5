#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
