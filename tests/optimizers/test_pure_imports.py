"""Optimizers and early-stop rules are pure: they import no torch, Lightning, Spark, zmq, sockets,
files or clocks, and use no global random state.

The model-based optimizers (GP, TPE, BOHB) fit their models with torch/BoTorch or Optuna, from
the optional ``bo`` extra: they may import those inside functions only (never at module level),
so that the optimizers package imports without them."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PURE_DIRS = [REPO / "lightning_maggy" / "optimizers", REPO / "lightning_maggy" / "earlystop"]
# The ablation study's planning half is pure too (surgery and features are the worker side).
PURE_FILES = [REPO / "lightning_maggy" / "ablation" / name for name in ("__init__.py", "components.py", "planner.py")]
HEAVY = ["torch", "lightning", "pytorch_lightning", "pyspark", "zmq"]
FORBIDDEN = set(HEAVY) | {
    "socket", "time", "datetime", "os", "io", "pathlib", "shutil", "tempfile", "random", "pickle",
    "subprocess", "threading", "multiprocessing", "asyncio", "urllib", "http", "requests",
}
#: Imported lazily, inside functions, by the model-based optimizers (the ``bo`` extra).
LAZY_ALLOWED = {"torch"}

SCRIPT = textwrap.dedent(
    f"""
    import importlib.abc
    import sys

    BLOCKED = {HEAVY!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"import of {{name}} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())

    import lightning_maggy.earlystop as earlystop
    import lightning_maggy.optimizers as optimizers
    from lightning_maggy.searchspace import Double, Searchspace
    from lightning_maggy.trial import Trial, TrialState

    space = Searchspace(x=Double(0.0, 1.0))
    import lightning_maggy
    import lightning_maggy.optimizers.bohb
    import lightning_maggy.optimizers.gp
    import lightning_maggy.optimizers.optuna_sampler
    assert lightning_maggy.GP is lightning_maggy.optimizers.gp.GP  # lazy export, no torch import
    for name in ("random", "grid", "asha", "hyperband"):
        opt = optimizers.get_optimizer(name)
        trials = {{}}
        opt.setup(space, num_trials=2, direction="max", max_epochs=3, trials=trials, seed=0)
        suggestion = opt.get_suggestion(None)
        assert isinstance(suggestion, Trial), suggestion
        trials[suggestion.trial_id] = suggestion.evolve(state=TrialState.RUNNING, history=(0.5,))
        opt.on_report(trials[suggestion.trial_id])
    import lightning_maggy.ablation as ablation

    study = ablation.AblationStudy()
    study.model.layers.include("net.1")
    loco = ablation.LOCO({{"lr": 0.1}}, [c.name for c in study.components], [0, 1])
    trials = {{}}
    loco.setup(None, num_trials=4, direction="max", max_epochs=2, trials=trials)
    first = loco.get_suggestion(None)
    assert first.component is None and first.seed == 0, first
    rule = earlystop.get_earlystop("median")
    finished = [Trial(trial_id=str(i), config={{}}, state=TrialState.COMPLETED, history=(1.0, 2.0)) for i in range(3)]
    assert rule.earlystop_check({{"r": Trial(trial_id="r", config={{}}, budget=3, history=(0.0,))}}, finished, "max") == ["r"]
    curve = earlystop.get_earlystop("curve", grace_period=3)
    low = Trial(trial_id="c", config={{}}, budget=30, history=(0.0, 0.0, 0.0))
    assert curve.earlystop_check({{"c": low}}, finished, "max") == ["c"]
    loaded = sorted(m for m in BLOCKED if m in sys.modules)
    assert not loaded, loaded
    print("PURE-OK")
    """
)


def test_subpackages_import_and_run_with_heavy_dependencies_blocked() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PURE-OK" in result.stdout


def _imports(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _imported_roots(path: Path) -> set[str]:
    """Every import of the module; those of LAZY_ALLOWED only count at module level (outside
    function bodies)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_functions: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_functions |= _imports(node)
    top_level = _imports(ast.Module(body=[n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))], type_ignores=[]))
    in_classes = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            in_classes |= _imports(ast.Module(body=[n for n in node.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))], type_ignores=[]))
    return top_level | in_classes | (in_functions - LAZY_ALLOWED)


@pytest.mark.parametrize(
    "path",
    sorted([p for d in PURE_DIRS for p in d.glob("*.py")] + PURE_FILES),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_modules_import_nothing_impure(path: Path) -> None:
    bad = _imported_roots(path) & FORBIDDEN
    assert not bad, f"{path.name} imports {sorted(bad)}; optimizers and early-stop rules must stay pure"
    source = path.read_text()
    assert "np.random.seed" not in source and "np.random.rand" not in source, "use self.rng, not global np.random"
