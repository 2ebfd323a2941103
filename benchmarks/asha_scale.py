"""ASHA's and Hyperband's decisions at scale: trials per second of their studies against random
search, as the study grows.

The workload is a trivial function trial (no training): it reports one value per step, from the
step it resumes at up to its budget, and returns. Each study runs on 2 local workers; the trial
phase (first trial start to last trial end, from the journal) is timed. ASHA promotes from
rungs of every trial that reached them, so a study's decisions must not slow down as it grows:
before its rungs were kept up to date incrementally (``RungIndex``), ASHA re-read and re-sorted
every trial on every decision and slowed from 214 trials/s over 2,000 trials to 34 trials/s over
8,000, while random search held its pace. Hyperband's brackets are kept up to date the same
way (``BracketIndex``).

Run: ``python benchmarks/asha_scale.py [--sizes 2000,8000] [--optimizers random,asha,hyperband] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any


def objective(hparams: dict[str, Any], reporter: Any) -> float:
    value = 0.0
    for step in range(reporter.start_step, reporter.budget):
        value = hparams["x"] * (1.0 - 0.5 ** (step + 1))
        reporter.broadcast(metric=value, step=step)
    return value


def run(optimizer: str, trials: int, exp_dir: str) -> dict[str, Any]:
    import lightning_maggy as lm
    from lightning_maggy.driver.journal import read_journal

    t0 = time.time()
    result = lm.search(
        objective, lm.Searchspace(x=lm.Double(0.0, 1.0)), metric="m", direction="max", optimizer=optimizer,
        num_trials=trials, max_epochs=9, workers=2, seed=0, exp_dir=exp_dir, verbose=False,
    )
    wall = time.time() - t0
    times = [ev["time"] for ev in read_journal(os.path.join(exp_dir, "journal.jsonl")) if ev["event"] in ("trial", "report")]
    span = max(times) - min(times)
    runs = sum(1 for ev in read_journal(os.path.join(exp_dir, "journal.jsonl"))
               if ev["event"] == "trial" and ev["trial"]["state"] == "RUNNING")
    return {"optimizer": optimizer, "trials": len(result.trials), "runs": runs,
            "epochs": sum(t.epochs_done for t in result.trials), "trial_phase_s": span,
            "trials_per_s": len(result.trials) / span, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,8000", help="study sizes (trials), comma-separated")
    parser.add_argument("--optimizers", default="random,asha,hyperband",
                        help="optimizers to time, comma-separated; random search is the reference")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        parser.error("--sizes must list positive trial counts, e.g. 2000,8000")
    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    rows = []
    print(f"{'trials':>8}{'optimizer':>11}{'trials/s':>10}{'runs':>8}{'phase s':>9}")
    with tempfile.TemporaryDirectory(prefix="asha-scale-") as tmp:
        for n in sizes:
            for opt in optimizers:
                row = run(opt, n, os.path.join(tmp, f"{opt}-{n}"))
                rows.append(row)
                print(f"{n:>8}{opt:>11}{row['trials_per_s']:>10.0f}{row['runs']:>8}{row['trial_phase_s']:>9.1f}", flush=True)
    print()
    for n in sizes:
        r = {row["optimizer"]: row for row in rows if row["trials"] == n}
        for opt in optimizers:
            if opt != "random" and "random" in r and opt in r:
                print(f"{n} trials: {opt} at {r[opt]['trials_per_s'] / r['random']['trials_per_s']:.2f}x random "
                      "search's trials per second (its trials also pause and resume: more runs per trial)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
