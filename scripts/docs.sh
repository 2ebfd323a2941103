#!/usr/bin/env bash
# Builds the documentation site into site/ with `mkdocs build --strict`: any warning (a broken
# link or anchor, a missing README section, a docstring griffe cannot parse) fails the build.
# Installs the `docs` extra of setup.cfg first when its packages are missing (only those: the
# build reads the package's sources and does not import it). Preview: `mkdocs serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import mkdocs, material, mkdocstrings, mkdocstrings_handlers.python" 2>/dev/null; then
  mapfile -t reqs < <("$PY" - <<'PYEOF'
import configparser
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
print("\n".join(r for r in cfg["options.extras_require"]["docs"].split("\n") if r.strip()))
PYEOF
)
  "$PY" -m pip install -q "${reqs[@]}"
fi
export NO_MKDOCS_2_WARNING=1   # mkdocs-material's banner about its successor; not a build warning
exec "$PY" -m mkdocs build --strict --site-dir site "$@"
