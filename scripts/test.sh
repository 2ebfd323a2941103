#!/usr/bin/env bash
# Quick start 2: set up, then run the whole test suite (unit, Lightning, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
exec "${PYTHON:-python3}" -m pytest -q "$@"
