#!/usr/bin/env bash
# Installs what Vireo needs on a fresh Debian machine: system packages (as root, or with
# sudo), a virtual environment in .venv, and Vireo itself (editable) with its Python deps.
#   scripts/setup.sh          what running Vireo needs
#   scripts/setup.sh --test   plus what the test suite needs (DCMTK, dicom3tools, PostgreSQL, Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

run_packages=(ca-certificates dcmtk curl)  # DCMTK and curl: the README's tour sends DICOM and calls the API with them
test_packages=(dcmtk dicom3tools dcm2niix postgresql chromium iproute2 util-linux procps strace orthanc orthanc-dicomweb fonts-ipafont-gothic)  # the font: CJK names in screenshots; strace: the order of the store's flushes

missing=()
packages=("${run_packages[@]}")
[ "$want_tests" = 1 ] && packages+=("${test_packages[@]}")
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# npm fetches OHIF Viewer (npm pack); Debian's npm package, unless an npm (e.g. with Node.js from elsewhere) is there.
command -v npm >/dev/null 2>&1 || missing+=(npm)
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.vireo-installed
extras=""
[ "$want_tests" = 1 ] && extras="[test]"
if [ ! -f "$stamp$extras" ] || [ pyproject.toml -nt "$stamp$extras" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".$extras"
  touch "$stamp$extras"
fi
# OHIF Viewer v3 (served under /ohif): fetched with npm, integrity-checked, outside the wheel.
# Returns at once when installed; without npm or network Vireo still runs and says how to add it.
if ! .venv/bin/python -m app.ohif install; then
  echo "setup: OHIF Viewer not installed (Vireo runs without it; see README, 'OHIF Viewer')" >&2
  [ "$want_tests" = 1 ] && exit 1
fi
