"""How much of the workers' time goes into training, on a digits ASHA study, and where the rest
goes.

The study: the demo's ``DigitsMLP`` and ``DigitsDataModule`` (``examples/digits_asha.py``) over
its space, ASHA (reduction factor 3, at most 9 epochs), ``--trials`` trials (default 60), 2 local
workers, seed 0. A Lightning callback added to every Trainer stamps, in each worker process, the
start of ``fit``, the start of every training epoch, the end of every validation (the epoch's
end) and the end of ``fit``; the journal gives when each trial run was handed out, and which
worker ran it.

The window is the first run's hand-out to the last run's end (the journal's final snapshot),
times the number of workers. Every second of each worker's window is put in one bucket, by the
stamps that bound it:

* training: a training epoch's start to its validation's end (the epoch's training and
  validation loops: what Optuna's and Ray Tune's workers would also spend);
* building the run: the hand-out to the callbacks' ``setup`` (the trial's folder made, module,
  datamodule and Trainer built, ``prepare_data`` and the datamodule's ``setup``);
* restoring: ``setup`` to ``fit``'s start (the module's ``setup``, ``configure_model``, the
  checkpoint restored);
* fit setup: ``fit``'s start to the first epoch (loaders, sanity check);
* between epochs: an epoch's end to the next epoch's start (the report and its answer, the
  checkpoint written, callbacks);
* end of fit: the last epoch's end to ``fit``'s end;
* between runs: ``fit``'s end to the next hand-out to that worker (metrics written, the final
  message, the next decision), and idle time at the window's edges.

Goal (issue #10): training at least 95% of the window. Prints the table and writes JSON.

Then (unless ``--no-replay``) our runs again in plain Lightning, one after another in one
process, with as many epochs as each trained: "default", as a user writes a run by hand (a new
module, a new datamodule and a default ``Trainer``: its logger, its checkpoint callback and the
sanity check), and "lean", the least a run can ask of Lightning (no logger or checkpoints, the
sanity check once, the data set up once and its loaders built once per batch size). For ours
and for both, what a run costs beyond its training over the busy span (first run's start to
last run's end); the difference is what lightning_maggy adds per run beyond Lightning's own
``fit`` (goal, issue #10: under 20 ms). The replay runs alone, without our two workers'
contention for the cores, so the difference is an upper bound.

Then, in the same run (``--compare``, default ``optuna,ray``, each where installed), the same
number of trials of the same module and datamodule elsewhere, stamped by the same callback:

* Optuna: random sampling with ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)``,
  2 processes sharing a journal file;
* Ray Tune: random sampling with ``ASHAScheduler(max_t=9, grace_period=1, reduction_factor=3)``,
  2 concurrent function trainables on a local 2-CPU Ray, ``reuse_actors=True``.

Both build a plain Trainer per trial as the digits race builds Optuna's (no logger, no
checkpoints: less than a Lightning user's default Trainer does), and their pruned trials stop
where ours pause and may resume. Their window is the first trial's start to the last stamp,
times 2 workers; training is the same epoch spans; "beyond training" is the rest per trial run.

Run: ``python benchmarks/training_share.py [--trials 60] [--compare optuna,ray] [--no-replay]
[--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

from share_sides import EXAMPLES, busy_figures, read_stamps, run_optuna, run_ray, run_replay, stamp_share, stamp_class

BUCKETS = (
    "training", "building the run", "restoring", "fit setup", "between epochs", "end of fit", "between runs",
)
_GAP = {  # (earlier stamp, later stamp) -> bucket
    ("epoch_start", "epoch_end"): "training",
    ("run_start", "setup"): "building the run",
    ("setup", "fit_start"): "restoring",
    ("fit_start", "epoch_start"): "fit setup",
    ("epoch_end", "epoch_start"): "between epochs",
    ("epoch_end", "fit_end"): "end of fit",
    ("fit_end", "run_start"): "between runs",
}

def run_study(trials: int, workdir: str) -> tuple[str, str]:
    """Runs the study; returns (journal path, stamps path)."""
    import lightning_maggy as lm

    sys.path.insert(0, EXAMPLES)
    import digits_asha

    stamps = os.path.join(workdir, "stamps.txt")
    exp = os.path.join(workdir, "exp")
    lm.search(
        digits_asha.DigitsMLP, digits_asha.SPACE, datamodule=digits_asha.DigitsDataModule, metric="val_acc",
        direction="max", optimizer=lm.ASHA(reduction_factor=3), num_trials=trials, max_epochs=9, workers=2,
        seed=0, exp_dir=exp, trainer_kwargs={"callbacks": [stamp_class()(stamps)]}, verbose=False,
    )
    return os.path.join(exp, "journal.jsonl"), stamps

def runs_of(
    events: dict[int, list[tuple[float, str]]], configs: dict[float, dict[str, Any]]
) -> list[list[tuple[dict[str, Any], int]]]:
    """Each worker's runs in order, as ``(configuration, epochs trained in the run)``, from its
    timeline and the configuration handed out at each run's start (:func:`timelines`)."""
    out = []
    for timeline in events.values():
        runs: list[tuple[dict[str, Any], int]] = []
        for when, kind in timeline:
            if kind == "run_start":
                runs.append((configs[when], 0))
            elif kind == "epoch_end" and runs:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        out.append([(hp, epochs) for hp, epochs in runs if epochs > 0])
    return out


def timelines(
    journal: str, stamps: str
) -> tuple[dict[int, list[tuple[float, str]]], float, float, int, dict[float, dict[str, Any]]]:
    """Per worker pid, its stamps in time order (with the journal's run hand-outs); the window's
    start and end; the number of trial runs; the configuration handed out at each run's start,
    by hand-out time."""
    from lightning_maggy.driver.journal import read_journal

    pid_of: dict[int, int] = {}
    events: dict[int, list[tuple[float, str]]] = defaultdict(list)
    configs: dict[float, dict[str, Any]] = {}
    state: dict[str, str] = {}
    start = end = None
    runs = 0
    for ev in read_journal(journal):
        if ev["event"] == "worker":
            pid_of[ev["worker_id"]] = ev["pid"]
        elif ev["event"] == "trial":
            t = ev["trial"]
            before, state[t["trial_id"]] = state.get(t["trial_id"]), t["state"]
            if t["state"] == "RUNNING" and before != "RUNNING":  # a new run (not a promotion in place)
                events[pid_of[t["worker"]]].append((ev["time"], "run_start"))
                configs[ev["time"]] = t["config"]
                start = ev["time"] if start is None else min(start, ev["time"])
                runs += 1
            elif t["state"] in ("COMPLETED", "STOPPED", "PAUSED", "FAILED"):
                end = ev["time"] if end is None else max(end, ev["time"])
    read_stamps(stamps, events)
    assert start is not None and end is not None, "the study ran no trial"
    return dict(events), start, end, runs, configs


def buckets(events: dict[int, list[tuple[float, str]]], start: float, end: float) -> dict[str, float]:
    out = dict.fromkeys(BUCKETS, 0.0)
    for timeline in events.values():
        clipped = [(min(max(t, start), end), kind) for t, kind in timeline]
        marks = [(start, "fit_end"), *clipped, (end, "run_start")]  # the edges count as idle
        for (t0, k0), (t1, k1) in zip(marks, marks[1:]):
            out[_GAP.get((k0, k1), "between runs")] += t1 - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument("--compare", default="optuna,ray",
                        help="sides to run after ours, the same number of trials each: optuna, ray (each where "
                        "installed); '' for none")
    parser.add_argument("--no-replay", dest="replay", action="store_false",
                        help="skip replaying our runs in plain Lightning (what a run costs beyond Lightning's own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.time()
        journal, stamps = run_study(args.trials, workdir)
        wall = time.time() - t0
        events, start, end, runs, configs = timelines(journal, stamps)
        spent = buckets(events, start, end)
        replay = runs_of(events, configs) if args.replay else None
    window = (end - start) * len(events)
    epochs = sum(1 for tl in events.values() for _, kind in tl if kind == "epoch_end")
    share = spent["training"] / window
    print(f"digits ASHA study: {args.trials} trials, {runs} runs, {epochs} epochs, {len(events)} workers; "
          f"window {end - start:.1f} s per worker, search() took {wall:.1f} s")
    print(f"{'where the workers time went':<28} {'s':>8} {'share':>7} {'per run':>9}")
    for name in BUCKETS:
        print(f"{name:<28} {spent[name]:8.2f} {spent[name] / window:7.1%} {1000 * spent[name] / runs:7.1f}ms")
    print(f"training share: {share:.1%} (goal: at least 95%); "
          f"per run beyond training: {1000 * (window - spent['training']) / runs:.0f} ms")
    added = None
    if replay is not None:
        ours, ours_share, ours_training = busy_figures(events)
        added = {"ours_ms": ours, "ours_share": ours_share, "ours_training_ms": ours_training}
        print(f"\nour {sum(map(len, replay))} runs again in plain Lightning, one after another in one process; "
              f"over the busy spans, beyond training per run, training share and training per run (ours: "
              f"{ours:.1f} ms, {ours_share:.1%}, {ours_training:.0f} ms):")
        for lean, name in ((False, "default"), (True, "lean")):
            with tempfile.TemporaryDirectory() as workdir:
                plain, plain_share, plain_training = busy_figures(
                    read_stamps(run_replay(replay, workdir, lean=lean), defaultdict(list)))
            added.update({f"{name}_ms": plain, f"{name}_share": plain_share, f"{name}_training_ms": plain_training})
            what = ("a new module, datamodule and default Trainer per run" if not lean else
                    "no logger or checkpoints, sanity check once, data set up once, loaders per batch size")
            print(f"  {name} Lightning ({what}): {plain:.1f} ms, {plain_share:.1%}, {plain_training:.0f} ms; "
                  f"lightning_maggy adds {ours - plain:+.1f} ms per run")
        print("  goal: under 20 ms beyond Lightning's own fit")
    sides = {}
    for side in [c.strip() for c in args.compare.split(",") if c.strip()]:
        import importlib.util

        if importlib.util.find_spec("optuna" if side == "optuna" else "ray") is None:
            print(f"{side}: not installed, left out")
            continue
        with tempfile.TemporaryDirectory() as workdir:
            stamps = (run_optuna if side == "optuna" else run_ray)(args.trials, workdir)
            sides[side] = stamp_share(stamps)
    if sides:
        print("\nthe same study elsewhere, in the same run (a plain Trainer without logger or checkpoints; their "
              "pruned trials stop, ours pause and resume):")
        print(f"{'side':<44} {'runs':>5} {'epochs':>7} {'window':>8} {'training':>9} {'beyond/run':>11}")
        rows = [("lightning_maggy, ASHA", {"runs": runs, "epochs": epochs, "window_s": end - start,
                                            "training_share": share,
                                            "beyond_ms": 1000 * (window - spent["training"]) / runs})]
        names = {"optuna": "Optuna, random + SuccessiveHalvingPruner", "ray": "Ray Tune, random + ASHAScheduler"}
        rows += [(names[side], res) for side, res in sides.items()]
        for name, res in rows:
            print(f"{name:<44} {res['runs']:>5} {res['epochs']:>7} {res['window_s']:>7.1f}s "
                  f"{res['training_share']:>9.1%} {res['beyond_ms']:>9.0f}ms")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"trials": args.trials, "runs": runs, "epochs": epochs, "workers": len(events),
                       "window_s": end - start, "seconds": spent, "training_share": share, "compared": sides,
                       "beyond_plain_lightning": added},
                      fh, indent=2)


if __name__ == "__main__":
    main()
