"""Time to 97% validation accuracy on digits: lightning_maggy's optimizers against Optuna.

The task is the demo's (``examples/digits_asha.py``): its ``DigitsMLP`` and ``DigitsDataModule``
(imported from there) over its search space, at most 9 epochs per trial, 2 workers, under a
wall-clock budget (default 180 s) counted from the first line of the process that runs the
search. Every (method, seed) runs in a fresh process, so each run pays its own imports:

* lightning_maggy: ``lm.search(..., optimizer=<method>, workers=2, timeout=<budget left>)`` for
  each of ``--methods`` (default "bohb,hyperband,gp,asha"; a method not available in this
  installation is skipped with a note);
* Optuna: ``TPESampler`` with ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)``
  (ASHA's settings), 2 processes sharing a ``JournalStorage`` file, each training the same
  Lightning module; ``val_acc`` is reported after every epoch with ``trial.report`` and
  ``trial.should_prune`` (optuna-integration's ``PyTorchLightningPruningCallback`` when it is
  installed and built for ``pytorch_lightning``, else the small callback below). Its trials
  are stopped at the budget, as lightning_maggy's are.

Both sides log every validation epoch's ``val_acc`` with a wall-clock time stamp (a callback
added to each Trainer). Per run: the time from the run's first line until some trial first
reached 97% validation accuracy, and the best accuracy reached within the budget. The table
gives, per method, the runs that reached 97%, the median time to 97% (of those runs) and the
median best accuracy.

Run: ``python benchmarks/digits_vs_optuna.py [--budget 180] [--seeds 3] [--first-seed 0] [--methods bohb,hyperband,gp,asha]``
(needs ``pip install optuna``; about budget x seeds x (methods + 1) seconds).
"""

from __future__ import annotations

import time

T0 = time.time()  # the run's clock starts at its first line, before any import

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from typing import Any  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")
MAX_EPOCHS = 9
TARGET = 0.97
WORKERS = 2
DEFAULT_METHODS = "bohb,hyperband,gp,asha"


# -- shared by both sides ---------------------------------------------------------------------
def _digits(prewarm: bool) -> Any:
    """The demo module (``DigitsMLP``, ``DigitsDataModule``, ``SPACE``). Importing it starts
    lightning_maggy's worker forkserver (``lm.prewarm()``); the Optuna side turns that off."""
    if not prewarm:
        os.environ["LIGHTNING_MAGGY_START_METHOD"] = "spawn"  # makes lm.prewarm() a no-op
    sys.path.insert(0, EXAMPLES)
    import digits_asha

    return digits_asha


def _accuracy_log_class() -> type:
    """A Lightning callback that appends ``<unix time> <val_acc>`` after every validation epoch
    to ``path``, and stops training once ``deadline`` has passed."""
    import pytorch_lightning as pl

    class AccuracyLog(pl.Callback):
        def __init__(self, path: str, deadline: float | None = None) -> None:
            self.path = path
            self.deadline = deadline

        def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.sanity_checking:
                return
            value = trainer.callback_metrics.get("val_acc")
            if value is not None:
                with open(self.path, "a") as fh:
                    fh.write(f"{time.time():.4f} {float(value):.6f}\n")
            if self.deadline is not None and time.time() >= self.deadline:
                trainer.should_stop = True

    return AccuracyLog


def _summarize(log_path: str, t0: float, budget: float) -> dict[str, Any]:
    """Time to TARGET (seconds from t0) and best accuracy within the budget, from the log."""
    first, best = None, None
    if os.path.exists(log_path):
        for line in open(log_path):
            parts = line.split()
            if len(parts) != 2:
                continue
            t, acc = float(parts[0]) - t0, float(parts[1])
            if t > budget or math.isnan(acc):
                continue
            best = acc if best is None else max(best, acc)
            if acc >= TARGET and (first is None or t < first):
                first = t
    return {"time_to_target": first, "best_acc": best}


# -- one lightning_maggy run (a child process) ------------------------------------------------
def _optimizer(method: str) -> Any:
    """The optimizer a ``--methods`` entry names: ``name`` or ``name:key=value[:key=value...]``
    (values as Python literals), e.g. ``bohb:early_promotion=False``."""
    import ast

    from lightning_maggy.optimizers import get_optimizer

    name, *pairs = method.split(":")
    kwargs = {key: ast.literal_eval(value) for key, _, value in (pair.partition("=") for pair in pairs)}
    return get_optimizer(name, **kwargs)


def run_maggy(method: str, seed: int, budget: float, workdir: str) -> dict[str, Any]:
    import lightning_maggy as lm

    lm.prewarm()
    digits = _digits(prewarm=True)
    log_path = os.path.join(workdir, "acc.log")
    AccuracyLog = _accuracy_log_class()
    left = budget - (time.time() - T0)
    result = lm.search(
        digits.DigitsMLP,
        digits.SPACE,
        datamodule=digits.DigitsDataModule,
        metric="val_acc",
        direction="max",
        optimizer=_optimizer(method),
        num_trials=None,
        max_epochs=MAX_EPOCHS,
        timeout=max(left, 1.0),
        workers=WORKERS,
        seed=seed,
        exp_dir=os.path.join(workdir, "exp"),
        trainer_kwargs={"callbacks": [AccuracyLog(log_path)]},
        verbose=False,
    )
    return {
        **_summarize(log_path, T0, budget),
        "trials": len(result.trials),
        "epochs": sum(t.epochs_done for t in result.trials),
        "wall_s": time.time() - T0,
    }


# -- one Optuna run: a child that starts 2 worker processes -----------------------------------
def _pruning_callback(trial: Any) -> Any:
    """optuna-integration's pruning callback if installed for ``pytorch_lightning``, else ours."""
    import optuna
    import pytorch_lightning as pl

    try:
        from optuna_integration import PyTorchLightningPruningCallback

        if issubclass(PyTorchLightningPruningCallback, pl.Callback):
            return PyTorchLightningPruningCallback(trial, monitor="val_acc")
    except ImportError:
        pass

    class PruningCallback(pl.Callback):
        """Reports ``val_acc`` after every epoch; raises ``TrialPruned`` when Optuna prunes."""

        def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.sanity_checking:
                return
            value = trainer.callback_metrics.get("val_acc")
            if value is None:
                return
            trial.report(float(value), step=trainer.current_epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {trainer.current_epoch}")

    return PruningCallback()


def _suggest(trial: Any, space: Any) -> dict[str, Any]:
    """The same search space through Optuna's suggest API."""
    from lightning_maggy.searchspace import Double, Integer

    hp: dict[str, Any] = {}
    for name, dim in space.items():
        if isinstance(dim, Double):
            hp[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
        elif isinstance(dim, Integer):
            hp[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        else:
            hp[name] = trial.suggest_categorical(name, list(dim.values))
    return hp


def optuna_worker(storage_path: str, seed: int, index: int, t0: float, budget: float, workdir: str) -> None:
    import optuna
    import pytorch_lightning as pl
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    import torch

    # One thread per worker process, as lightning_maggy's local workers use (cpus // workers).
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORKERS))
    digits = _digits(prewarm=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    AccuracyLog = _accuracy_log_class()
    deadline = t0 + budget
    log_path = os.path.join(workdir, "acc.log")
    study = optuna.load_study(
        study_name="digits",
        storage=JournalStorage(JournalFileBackend(storage_path)),
        sampler=optuna.samplers.TPESampler(seed=1000 * seed + index),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    )
    def objective(trial: optuna.Trial) -> float:
        hp = _suggest(trial, digits.SPACE)
        trainer = pl.Trainer(
            max_epochs=MAX_EPOCHS,
            accelerator="cpu",
            # The log first: the pruning callback raises, and the epoch it prunes at counts too.
            callbacks=[AccuracyLog(log_path, deadline), _pruning_callback(trial)],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(digits.DigitsMLP(**hp), datamodule=digits.DigitsDataModule(batch_size=hp["batch_size"]))
        return float(trainer.callback_metrics["val_acc"])

    study.optimize(objective, timeout=max(deadline - time.time(), 1.0), catch=())


def run_optuna(seed: int, budget: float, workdir: str) -> dict[str, Any]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage_path = os.path.join(workdir, "optuna-journal.log")
    optuna.create_study(
        study_name="digits",
        storage=JournalStorage(JournalFileBackend(storage_path)),
        direction="maximize",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--optuna-worker", storage_path, str(seed), str(i), repr(T0),
             str(budget), workdir],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(workdir, f"worker-{i}.err"), "w"),
        )
        for i in range(WORKERS)
    ]
    for proc in procs:
        proc.wait()
    study = optuna.load_study(study_name="digits", storage=JournalStorage(JournalFileBackend(storage_path)))
    return {
        **_summarize(os.path.join(workdir, "acc.log"), T0, budget),
        "trials": len(study.trials),
        "epochs": sum(len(t.intermediate_values) for t in study.trials),
        "wall_s": time.time() - T0,
    }


# -- the parent: one fresh process per (method, seed), then the table ------------------------
def _available(method: str) -> str | None:
    """None if lightning_maggy offers ``method`` here, else why not."""
    from lightning_maggy.exceptions import ConfigurationError

    try:
        _optimizer(method)
    except (ConfigurationError, ValueError, SyntaxError) as err:
        return str(err).split(";")[0]
    return None


def _run_child(method: str, seed: int, budget: float, workdir: str) -> dict[str, Any]:
    out = os.path.join(workdir, "result.json")
    cmd = [sys.executable, __file__, "--child", method, "--seed", str(seed), "--budget", str(budget),
           "--workdir", workdir, "--out", out]
    with open(os.path.join(workdir, "child.log"), "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=budget + 120)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if rc != 0 or not os.path.exists(out):
        tail = open(os.path.join(workdir, "child.log")).read()[-600:]
        return {"error": f"exit {rc}: {tail}"}
    return json.load(open(out))


def _fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec`` (a format spec, then an optional unit), or "-"."""
    fmt, _, unit = spec.partition(" ")
    return "-" if value is None else format(value, fmt) + (f" {unit}" if unit else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=180.0, help="wall-clock seconds per run")
    parser.add_argument("--seeds", type=int, default=3, help="runs per method (seeds F..F+N-1)")
    parser.add_argument("--first-seed", type=int, default=0, help="F, the first seed (default 0)")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help=f"lightning_maggy optimizers, comma-separated (default {DEFAULT_METHODS}); "
                        "an entry may add constructor arguments, e.g. bohb:early_promotion=False; "
                        "Optuna TPE + successive halving always runs too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--optuna-worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.optuna_worker:
        storage, seed, index, t0, budget, workdir = args.optuna_worker
        optuna_worker(storage, int(seed), int(index), float(t0), float(budget), workdir)
        return
    if args.child:
        if args.child == "optuna":
            res = run_optuna(args.seed, args.budget, args.workdir)
        else:
            res = run_maggy(args.child, args.seed, args.budget, args.workdir)
        with open(args.out, "w") as fh:
            json.dump(res, fh)
        return

    if args.budget <= 0 or args.seeds < 1 or args.first_seed < 0:
        parser.error("--budget must be > 0, --seeds >= 1 and --first-seed >= 0")
    methods, notes = [], []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        why = _available(method)
        if why is None:
            methods.append(method)
        else:
            notes.append(f"skipped {method!r}: {why}")
    methods.append("optuna")
    for note in notes:
        print(note)
    print(f"digits MLP, {WORKERS} workers, max {MAX_EPOCHS} epochs per trial, budget {args.budget:.0f} s per run "
          f"from the run's first line, seeds {args.first_seed}..{args.first_seed + args.seeds - 1}, "
          f"target val_acc >= {TARGET}")
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory(prefix="digits-bench-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for method in methods:
                workdir = os.path.join(tmp, f"{method}-{seed}")
                os.makedirs(workdir)
                res = _run_child(method, seed, args.budget, workdir)
                results[method].append(res)
                if "error" in res:
                    print(f"  {method:<10} seed {seed}: FAILED {res['error']}")
                else:
                    print(f"  {method:<10} seed {seed}: time to {TARGET:.0%} {_fmt(res['time_to_target'], '.1f s')}, "
                          f"best {_fmt(res['best_acc'], '.4f')}, {res['trials']} trials, {res['epochs']} epochs, "
                          f"ended after {res['wall_s']:.1f} s", flush=True)
    label = "optuna (TPE + SHA)"
    print(f"\n{'method':<28}{'reached 97%':>13}{'median time to 97%':>20}{'median best acc':>17}")
    for method, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        times = [r["time_to_target"] for r in ok if r["time_to_target"] is not None]
        bests = [r["best_acc"] for r in ok if r["best_acc"] is not None]
        name = label if method == "optuna" else f"lightning_maggy {method}"
        print(f"{name:<28}{f'{len(times)}/{len(runs)}':>13}"
              f"{_fmt(statistics.median(times) if times else None, '.1f s'):>20}"
              f"{_fmt(statistics.median(bests) if bests else None, '.4f'):>17}")


if __name__ == "__main__":
    main()
