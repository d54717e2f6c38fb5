#!/usr/bin/env bash
# Set up (first time only) and start Vireo: http://127.0.0.1:8080, DICOM on port 11112.
# Options and VIREO_* variables pass through: ./run.sh --help
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python main.py "$@"
