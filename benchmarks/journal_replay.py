"""Reading a study back from its journal: how long ``resume=`` (and ``lightning_maggy show``)
take to rebuild every trial's record from 100,000 events.

The journal is written with the driver's own :class:`~lightning_maggy.driver.journal.Journal`,
in the shape a study writes: ``experiment_start``, then per trial a RUNNING snapshot, one
``report`` per epoch and a final snapshot (COMPLETED, or STOPPED for a third of them, as the
median rule or ASHA leave them), over a 6-hyperparameter space. It is then read back with
:func:`~lightning_maggy.driver.journal.load_study` (what a resume runs) and with
:func:`~lightning_maggy.driver.journal.replay`; each is timed as the best of ``--repeat`` runs.
Goal (issue #10): 100,000 events in under 2 s.

Run: ``python benchmarks/journal_replay.py [--events 100000] [--repeat 3] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from typing import Any

EPOCHS = 8  # reports per trial: a trial is 2 + 8 = 10 events


def write_journal(path: str, events: int, seed: int = 0) -> int:
    """Writes a journal of about ``events`` events; returns the number written."""
    from lightning_maggy.driver.journal import Journal
    from lightning_maggy.trial import Trial, TrialState

    rng = random.Random(seed)
    journal = Journal(path, sync_interval=0.02)
    journal.append("experiment_start", experiment={"name": "bench", "metric": "val_acc", "direction": "max"})
    written, number = 1, 0
    while written + 2 + EPOCHS <= events:
        config = {
            "lr": 10 ** rng.uniform(-4, -1), "units": rng.choice([32, 64, 128, 256]), "depth": rng.randint(1, 4),
            "dropout": rng.uniform(0, 0.5), "act": rng.choice(["relu", "gelu", "tanh"]), "wd": 10 ** rng.uniform(-6, -2),
        }
        trial = Trial.create(config, budget=EPOCHS).evolve(state=TrialState.RUNNING, attempt=1, worker=number % 64)
        journal.trial(trial)
        stop_at = EPOCHS if number % 3 else rng.randint(1, EPOCHS)
        history = []
        for epoch in range(stop_at):
            value = rng.random()
            history.append(value)
            journal.report(trial.trial_id, epoch, value, "continue")
        for _ in range(EPOCHS - stop_at):  # a stopped trial's events are fewer: pad with reports
            journal.report(trial.trial_id, stop_at - 1, history[-1], "stop")
        final = TrialState.COMPLETED if stop_at == EPOCHS else TrialState.STOPPED
        journal.trial(trial.evolve(state=final, history=tuple(history), final_metric=history[-1]))
        written += 2 + EPOCHS
        number += 1
    journal.close()
    return written


def best_of(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from lightning_maggy.driver.journal import load_study, replay

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "journal.jsonl")
        events = write_journal(path, args.events)
        size = os.path.getsize(path)
        log = load_study(path)
        trials = len(log.trials)
        t_load = best_of(lambda: load_study(path), args.repeat)
        t_replay = best_of(lambda: replay(path), args.repeat)
    out = {
        "events": events, "trials": trials, "bytes": size,
        "load_study_s": round(t_load, 3), "replay_s": round(t_replay, 3),
        "events_per_s": round(events / t_load), "goal_s": 2.0, "goal_holds": t_load < 2.0,
    }
    print(f"{events:,} events ({trials:,} trials, {size / 1e6:.1f} MB), best of {args.repeat}:")
    print(f"  load_study (what resume= runs): {t_load:.2f} s  ({out['events_per_s']:,} events/s)")
    print(f"  replay (trial records only):    {t_replay:.2f} s")
    print(f"goal: under 2 s for 100,000 events: {'holds' if out['goal_holds'] else 'FAILS'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
