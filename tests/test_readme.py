"""The README as a new user reads it: links stay inside the repository, the quick start says
where packages go, and the usage example does not print the summary search() already printed."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _anchors(text: str) -> set[str]:
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_link_points_into_the_repository_or_the_web() -> None:
    anchors = _anchors(README)
    for target in re.findall(r"\]\(([^)\s]+)\)", README):
        if target.startswith(("http://", "https://")):
            continue
        if target.startswith("#"):
            assert target[1:] in anchors, f"README links to a missing section {target}"
            continue
        path = (REPO / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO), f"README links outside the repository: {target}"
        assert path.exists(), f"README links to a missing file: {target}"


def test_the_quick_start_says_where_packages_go() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "venv" in quick and "PYTHON=" in quick


def test_the_usage_example_does_not_print_the_summary_again() -> None:
    # search() prints the summary itself (verbose=True); printing it again doubled the table.
    for block in re.findall(r"```python\n(.*?)```", README, flags=re.S):
        if "lm.search(" in block and "verbose=False" not in block:
            assert "print(result.summary())" not in block, block
