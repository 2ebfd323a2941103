"""The recorded-curve simulator: curves files, the replay, and the same decisions as a study on
real workers fed the same curves."""

from __future__ import annotations

import functools
import gzip
import json

import numpy as np
import pytest

import lightning_maggy as lm
from lightning_maggy.simulator import Curves, simulate
from lightning_maggy.trial import TrialState

EPOCHS = 9
SPACE = lm.Searchspace(
    lr=lm.Double(1e-3, 1.0, log=True),
    units=lm.Integer(4, 64, log=True),
    act=lm.Categorical(["relu", "tanh"]),
)


@functools.lru_cache(maxsize=None)
def _curves() -> Curves:
    """Saturating curves whose height depends on all three hyperparameters, from a fixed seed
    (the real workers of the equivalence tests rebuild the same ones)."""
    rng = np.random.default_rng(7)
    configs = [SPACE.sample(rng) for _ in range(60)]
    values, seconds = [], []
    for c in configs:
        top = 0.95 - 0.2 * (np.log10(c["lr"]) + 1.5) ** 2 - 0.01 * abs(np.log2(c["units"]) - 4) - 0.05 * (c["act"] == "tanh")
        rate = 0.2 + c["lr"]
        values.append(top * (1 - np.exp(-rate * np.arange(1, EPOCHS + 1))) + 0.01 * rng.normal(size=EPOCHS))
        seconds.append(rng.uniform(0.05, 0.15, size=EPOCHS))
    return Curves(SPACE, configs, np.round(values, 6), np.round(seconds, 5), metric="acc", run_overhead=0.03, name="toy")


def test_curves_round_trip_and_nearest_neighbour(tmp_path):
    curves = _curves()
    loaded = Curves.load(curves.save(tmp_path / "c.json.gz"))
    assert loaded.space == curves.space and loaded.configs == curves.configs
    np.testing.assert_allclose(loaded.values, curves.values)
    np.testing.assert_allclose(loaded.seconds, curves.seconds)
    assert (loaded.metric, loaded.direction, loaded.run_overhead, loaded.name) == ("acc", "max", 0.03, "toy")
    for i, config in enumerate(curves.configs):
        assert curves.nearest(config) == i
    # A categorical mismatch costs 1, more than any numeric distance along one dimension.
    config = dict(curves.configs[0], act="tanh" if curves.configs[0]["act"] == "relu" else "relu")
    assert curves.configs[curves.nearest(config)]["act"] == config["act"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_trials": None, "timeout": None}, "num_trials=, timeout="),
        ({"num_trials": 5, "max_epochs": EPOCHS + 1}, "the 9 epochs the curves hold"),
        ({"num_trials": 5, "workers": 0}, "workers"),
        ({"timeout": -1.0}, "positive number of simulated seconds"),
        ({"num_trials": 5, "optimizer": "nope"}, "nope"),
    ],
)
def test_bad_simulation_settings_are_refused(kwargs, match):
    with pytest.raises(lm.ConfigurationError, match=match):
        simulate(_curves(), **kwargs)


def test_bad_curves_are_refused(tmp_path):
    c = _curves()
    with pytest.raises(lm.ConfigurationError, match="shape"):
        Curves(SPACE, c.configs, c.values[:, :3], c.seconds, metric="acc")
    with pytest.raises(lm.ConfigurationError, match="finite"):
        Curves(SPACE, c.configs, c.values, -c.seconds, metric="acc")
    with pytest.raises(lm.SearchspaceError):
        Curves(SPACE, [dict(c.configs[0], lr=5.0)] + c.configs[1:], c.values, c.seconds, metric="acc")
    bad = tmp_path / "bad.json.gz"
    with gzip.open(bad, "wt") as fh:
        json.dump({"format": "other"}, fh)
    with pytest.raises(lm.ConfigurationError, match="not a curves file"):
        Curves.load(bad)
    with pytest.raises(lm.ConfigurationError, match="Curves object"):
        simulate({"values": []}, num_trials=3)


def test_random_search_replays_the_nearest_curves_in_simulated_time():
    curves = _curves()
    sim = simulate(curves, optimizer="random", workers=3, num_trials=12, seed=3)
    assert sim.stop_reason == "finished" and len(sim.trials) == 12 and sim.runs == 12
    busy = 0.0
    for t in sim.trials:
        i = curves.nearest(t.config)
        assert t.state is TrialState.COMPLETED
        np.testing.assert_allclose(t.history, curves.values[i])
        busy += curves.run_overhead + curves.seconds[i].sum()
    assert sim.epochs == 12 * EPOCHS
    # Three workers never idle while trials remain: the study lasts at least a third of the work.
    assert busy / 3 <= sim.elapsed + 1e-9 and sim.elapsed < busy
    times = [r[0] for r in sim.reports]
    assert times == sorted(times)
    best = sim.best_at([0.0, sim.elapsed / 2, sim.elapsed])
    assert np.isnan(best[0]) and best[1] <= best[2] == max(max(t.history) for t in sim.trials)


def test_timeout_counts_simulated_seconds_and_asha_scales_to_many_workers():
    curves = _curves()
    sim = simulate(curves, optimizer="asha", workers=64, timeout=2.0, seed=0)
    assert sim.stop_reason == "timeout"
    # Running trials are stopped at their next report, as in a real study: one epoch (and a run's start) at most.
    late = [r for r in sim.reports if r[0] > 2.0]
    assert late and all(r[0] <= 2.0 + curves.run_overhead + curves.seconds.max() for r in late)
    assert len({r[1] for r in late}) == len(late)  # one report each, then stopped
    big = simulate(curves, optimizer="asha", workers=64, num_trials=1500, seed=0)
    assert big.stop_reason == "finished" and len(big.trials) == 1500
    assert big.runs > 1500  # promotions resume paused trials
    for t in big.trials:
        assert t.budget in (1, 3, 9) and len(t.history) == t.budget
        np.testing.assert_allclose(t.history, curves.values[curves.nearest(t.config), : t.budget])


def _replay(hparams, reporter):
    """A function trial that 'trains' by replaying the curve the simulator would replay."""
    curve = _curves().values[_curves().nearest(hparams)]
    value = None
    for step in range(reporter.start_step, reporter.budget):
        value = float(curve[step])
        reporter.broadcast(value, step)
    return value


def _decisions(trials):
    return [(t.trial_id, t.state, t.budget, tuple(np.round(t.history, 6))) for t in trials]


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer, early_stop",
    [(lambda: lm.ASHA(reduction_factor=3, resource_min=1), None), (lambda: "random", "median")],
    ids=["asha", "random+median"],
)
def test_a_replayed_study_decides_as_the_same_study_on_real_workers(tmp_path, optimizer, early_stop):
    real = lm.search(
        _replay, SPACE, metric="acc", max_epochs=EPOCHS, optimizer=optimizer(), early_stop=early_stop,
        num_trials=14, workers=1, seed=5, exp_dir=tmp_path / "real", verbose=False,
    )
    sim = simulate(_curves(), optimizer=optimizer(), early_stop=early_stop, num_trials=14, workers=1, seed=5,
                   lightning=False)
    assert _decisions(sim.trials) == _decisions(real.trials)
    assert {t.state for t in real.trials} & {TrialState.STOPPED, TrialState.PAUSED}  # decisions were made
    assert sim.best_trial.trial_id == real.best_trial.trial_id


def _replay_module_class() -> type:
    import pytorch_lightning as pl
    import torch

    class ReplayModule(pl.LightningModule):
        """Trains a real (tiny) Trainer, but logs the recorded curve's value as its metric."""

        def __init__(self, lr: float, units: int, act: str) -> None:
            super().__init__()
            self.curve = _curves().values[_curves().nearest({"lr": lr, "units": units, "act": act})]
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.w - batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("acc", float(self.curve[self.current_epoch]))

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=4)

        def val_dataloader(self):
            return self.train_dataloader()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return ReplayModule


@pytest.mark.slow
def test_a_replayed_lightning_study_promotes_in_place_as_real_workers_do(tmp_path):
    asha = functools.partial(lm.ASHA, reduction_factor=3, resource_min=1)
    real = lm.search(
        _replay_module_class(), SPACE, metric="acc", max_epochs=EPOCHS, optimizer=asha(), num_trials=10, workers=1,
        seed=2, exp_dir=tmp_path / "real", verbose=False,
    )
    sim = simulate(_curves(), optimizer=asha(), num_trials=10, workers=1, seed=2)
    assert _decisions(sim.trials) == _decisions(real.trials)
    assert sim.runs < sum(1 + (t.budget > 1) + (t.budget > 3) for t in sim.trials)  # some promoted in place


@pytest.mark.slow
def test_record_keeps_every_epochs_metric_and_time_of_a_real_search(tmp_path):
    from tiny_models import BlobsDataModule, TinyClassifier

    # epoch_sleep sleeps 0.05 s in on_train_epoch_end, which Lightning calls after the epoch's
    # validation: the work between epochs, which the timer counts in the next epoch.
    path = tmp_path / "tiny.json.gz"
    space = lm.Searchspace(lr=lm.Double(0.01, 0.5, log=True), hidden=lm.Integer(4, 32), epoch_sleep=lm.Discrete([0.05]))
    curves = Curves.record(
        TinyClassifier, space, metric="val_acc", max_epochs=3, num_trials=3, datamodule=BlobsDataModule,
        workers=1, exp_dir=tmp_path / "study", path=path, name="tiny", verbose=False,
    )
    assert len(curves) == 3 and curves.max_epochs == 3 and curves.name == "tiny"
    assert np.all((curves.values >= 0) & (curves.values <= 1))
    assert np.all(curves.seconds[:, 1:] >= 0.05) and curves.run_overhead >= 0
    assert Curves.load(path).configs == curves.configs
    sim = simulate(curves, optimizer="random", num_trials=3, workers=1, seed=0)
    assert sim.elapsed >= 3 * 2 * 0.05
