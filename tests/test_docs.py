"""The documentation site: it builds in strict mode, and its runnable examples run.

A fenced ```python block in ``docs/**/*.md`` whose first line is ``# runnable`` is executed as a
script in a fresh interpreter with the repository root on ``PYTHONPATH``; it must exit with 0
(the examples assert what they show). The strict build needs the ``docs`` extra (part of
``dev``, which CI installs); without mkdocs it is skipped with a message saying so.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_MARK = "# runnable"


def runnable_blocks() -> list[tuple[str, str]]:
    """(``page:line``, code) of every runnable example in the docs."""
    out = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            code = match.group(1)
            if code.splitlines()[:1] == [_MARK]:
                line = text.count("\n", 0, match.start()) + 1
                out.append((f"{page.relative_to(DOCS)}:{line}", code))
    return out


BLOCKS = runnable_blocks()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["NO_MKDOCS_2_WARNING"] = "1"
    return env


def test_docs_have_runnable_examples() -> None:
    assert len(BLOCKS) >= 2, f"expected at least two '{_MARK}' examples in docs/, found {len(BLOCKS)}"


@pytest.mark.parametrize("where,code", BLOCKS, ids=[where for where, _ in BLOCKS])
def test_runnable_example(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (
        f"the runnable example at docs/{where} exited with {proc.returncode}:\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    )


def test_strict_build(tmp_path: Path) -> None:
    missing = [m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"the docs build needs the 'docs' extra (pip install -e .[docs]); missing: {', '.join(missing)}"
        )
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    for page in ("index.html", "api/search/index.html", "guide/reliability/index.html"):
        assert (site / page).is_file(), f"{page} is missing from the built site"
    assert "--8<--" not in (site / "index.html").read_text(encoding="utf-8"), "a snippet was not included"
