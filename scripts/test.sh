#!/usr/bin/env bash
# Quick start 2: set up, then run the whole test suite (unit, Lightning, end-to-end, Spark).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash scripts/ensure_java.sh
exec "${PYTHON:-python3}" -m pytest -q "$@"
