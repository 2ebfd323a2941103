#!/usr/bin/env bash
# Quick start 1: set up, then run a real ASHA search of a Lightning MLP on scikit-learn's digits
# with 2 local workers (about a minute on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh examples
exec "${PYTHON:-python3}" examples/digits_asha.py "$@"
