from __future__ import annotations

import os
import sys

# Make tests/tiny_models.py importable by the tests and by worker processes.
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    """Says how many Spark tests ran, so that a run without Java cannot skip them unnoticed."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome in counts:
        for report in terminalreporter.stats.get(outcome, []):
            if "spark" in getattr(report, "keywords", {}) and (outcome == "skipped" or report.when == "call"):
                counts[outcome] += 1
    terminalreporter.write_line(
        f"spark tests: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
    )
