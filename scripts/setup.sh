#!/usr/bin/env bash
# Installs lightning_maggy (editable) with the given extras into the current Python.
# torch comes first: on this project's machines torch 2.14.1 lies on disk; elsewhere set
# TORCH_PIP (e.g. TORCH_PIP="torch --index-url https://download.pytorch.org/whl/cpu").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-}
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  # shellcheck disable=SC2086
  "$PY" -m pip install -q ${TORCH_PIP:-torch==2.14.1 torchvision==0.29.1}
fi
"$PY" -m pip install -q -e ".${extras:+[$extras]}"
