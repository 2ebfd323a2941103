"""Search spaces as users write them: NumPy bounds and choices, odd values, and the Python types
a trial receives and the journal records (real searches on worker processes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import lightning_maggy as lm
from lightning_maggy.exceptions import SearchspaceError
from lightning_maggy.optimizers import ASHA

# -- construction ---------------------------------------------------------------------------


def test_numpy_arrays_and_scalars_as_choices_become_python_values() -> None:
    widths = lm.Discrete(np.arange(16, 65, 16))
    acts = lm.Categorical(np.array(["relu", "tanh"]))
    mixed = lm.Categorical([np.float64(0.5), np.int64(2), np.bool_(True), None, "x"])
    assert widths.values == [16, 32, 48, 64] and all(type(v) is int for v in widths.values)
    assert acts.values == ["relu", "tanh"] and all(type(v) is str for v in acts.values)
    assert [type(v) for v in mixed.values] == [float, int, bool, type(None), str]
    rng = np.random.default_rng(0)
    assert all(type(widths.sample(rng)) is int for _ in range(10))
    json.dumps(lm.Searchspace(w=widths, a=acts, m=mixed).to_dict())  # the journal's record


def test_discrete_refuses_values_that_are_the_same_number() -> None:
    with pytest.raises(SearchspaceError, match="distinct numbers"):
        lm.Discrete([1, 1.0, 2])
    assert lm.Categorical([1, 1.0, True]).values == [1, 1.0, True]  # categories are kept as given


@pytest.mark.parametrize("log", ["yes", None, 2])
def test_log_must_be_true_or_false(log: object) -> None:
    with pytest.raises(SearchspaceError, match="log must be True or False"):
        lm.Double(1e-3, 1.0, log=log)  # type: ignore[arg-type]
    with pytest.raises(SearchspaceError, match="log must be True or False"):
        lm.Integer(1, 100, log=log)  # type: ignore[arg-type]
    assert lm.Double(1e-3, 1.0, log=np.bool_(True)).log is True


def test_integer_float_bounds_say_what_to_write() -> None:
    with pytest.raises(SearchspaceError, match=r"write Integer\(1, 10\)"):
        lm.Integer(1.0, 10.0)  # type: ignore[arg-type]
    with pytest.raises(SearchspaceError, match="use Double"):
        lm.Integer(1.5, 10)  # type: ignore[arg-type]


@pytest.mark.parametrize(("low", "high"), [(0, 10**30), (0, 2**63), (-(2**63) - 1, 0), (1, 10**20)])
def test_integer_bounds_beyond_int64_are_refused_when_declared(low: int, high: int) -> None:
    # they used to be accepted, and the first sample raised numpy's ValueError mid-study
    with pytest.raises(SearchspaceError, match="64-bit integers"):
        lm.Integer(low, high)


@pytest.mark.parametrize(
    "hp", [lm.Integer(0, 2**63 - 1), lm.Integer(-(2**63), 2**63 - 1), lm.Integer(1, 2**63 - 1, log=True)]
)
def test_integer_ranges_up_to_int64_sample_and_grid_inside_their_bounds(hp: lm.Integer) -> None:
    rng = np.random.default_rng(1)
    values = [hp.sample(rng) for _ in range(20)] + hp.grid(5) + [hp.decode(u) for u in (0.0, 0.5, 1.0)]
    assert all(type(v) is int and hp.contains(v) for v in values), values


def test_integer_sampling_stream_is_unchanged_for_ordinary_ranges() -> None:
    # resumed studies replay their draws: the same seed must give the same integers as before
    hp, rng = lm.Integer(-5, 1000), np.random.default_rng(7)
    expected = np.random.default_rng(7).integers(-5, 1001, size=20).tolist()
    assert [hp.sample(rng) for _ in range(20)] == expected


# -- configurations -------------------------------------------------------------------------

SPACE = lm.Searchspace(n=lm.Integer(1, 64), x=lm.Double(0.0, 1.0), c=lm.Categorical(["a", "b"]))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (np.int64(32), "It is a NumPy int64"),
        (32.0, "return int(value) (32)"),
        (np.float32(3.0), "It is a NumPy float32"),
    ],
)
def test_integer_values_of_other_types_are_refused_with_advice(value: object, fragment: str) -> None:
    # a float or a NumPy int passed validation before, and the module got 32.0 or the journal "32"
    with pytest.raises(SearchspaceError) as info:
        SPACE.validate({"n": value, "x": 0.5, "c": "a"})
    assert "of type" in str(info.value) and fragment in str(info.value)


def test_numpy_values_are_refused_for_doubles_and_categories_unless_json_takes_them() -> None:
    SPACE.validate({"n": 3, "x": np.float64(0.5), "c": np.str_("a")})  # subclasses of float and str
    with pytest.raises(SearchspaceError, match="NumPy float32"):
        SPACE.validate({"n": 3, "x": np.float32(0.5), "c": "a"})


def test_a_suggester_that_draws_numpy_values_gives_python_configurations() -> None:
    def suggester(space, rng, trials):  # what a user writes with the generator it is given
        return {"n": rng.integers(1, 65), "x": rng.uniform(), "c": rng.choice(["a", "b"])}

    opt = ASHA(suggester=suggester, seed=0)
    opt.setup(SPACE, num_trials=3, direction="max", max_epochs=3, trials={})
    config = opt.get_suggestion().config  # type: ignore[union-attr]
    assert {k: type(v) for k, v in config.items()} == {"n": int, "x": float, "c": str}


# -- real searches ----------------------------------------------------------------------------


def _lightning_trial_module():
    import torch
    from sklearn.datasets import load_breast_cancer
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    import lightning.pytorch as pl

    x, y = load_breast_cancer(return_X_y=True)
    x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)[:200]
    y = torch.tensor(y)[:200]

    class Cancer(pl.LightningModule):
        """Refuses to build with any hyperparameter of a type other than the space's."""

        def __init__(self, lr=0.01, width=8, act="relu", bias=True, dropout=None, batch_size=32):
            super().__init__()
            got = (type(lr), type(width), type(act), type(bias), type(dropout), type(batch_size))
            if got[:4] != (float, int, str, bool) or dropout not in (None, 0.25) or type(batch_size) is not int:
                raise TypeError(f"hyperparameters of the wrong types: {got}")
            layers = [nn.Linear(30, width, bias=bias), {"relu": nn.ReLU(), "tanh": nn.Tanh()}[act]]
            self.net = nn.Sequential(*layers, nn.Dropout(dropout or 0.0), nn.Linear(width, 2))
            self.lr, self.batch_size = lr, batch_size

        def training_step(self, batch, _):
            return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def validation_step(self, batch, _):
            self.log("val_acc", (self.net(batch[0]).argmax(1) == batch[1]).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

        def train_dataloader(self):
            return DataLoader(TensorDataset(x[:150], y[:150]), batch_size=self.batch_size)

        def val_dataloader(self):
            return DataLoader(TensorDataset(x[150:], y[150:]), batch_size=50)

    return Cancer


def test_a_lightning_search_gets_the_space_types_and_the_journal_records_the_configs(tmp_path: Path) -> None:
    space = lm.Searchspace(
        lr=lm.Double(np.float32(1e-3), np.float64(0.5), log=True),
        width=lm.Integer(np.int64(4), np.int32(16)),
        act=lm.Categorical(np.array(["relu", "tanh"])),
        bias=lm.Categorical([True, False]),
        dropout=lm.Categorical([None, 0.25]),
        batch_size=lm.Discrete(np.array([16, 32, 64])),
    )
    result = lm.search(
        _lightning_trial_module(), space, metric="val_acc", optimizer="random", max_epochs=1,
        num_trials=3, workers=1, exp_dir=tmp_path / "study", seed=3, verbose=False,
        trainer_kwargs={"accelerator": "cpu"},
    )
    assert [t.state for t in result.trials] == [lm.TrialState.COMPLETED] * 3, [t.error for t in result.trials]
    recorded = {}
    for line in (tmp_path / "study" / "journal.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "trial":
            recorded[event["trial"]["trial_id"]] = event["trial"]["config"]
    for trial in result.trials:
        assert recorded[trial.trial_id] == trial.config
        assert [type(v) for v in recorded[trial.trial_id].values()] == [type(v) for v in trial.config.values()]
        space.validate(trial.config)
    assert math.isfinite(result.best_metric)


class _NumpyOptimizer(lm.AbstractOptimizer):
    """A custom optimizer that draws with its generator's choice(): NumPy scalars."""

    def initialize(self) -> None:
        pass

    def get_suggestion(self, trial=None):
        if len(self.trials) >= self.num_trials:
            return None
        return self.create_trial({"n": self.rng.choice([16, 32]), "x": 0.5, "c": "a"})

    def finalize_experiment(self, trials) -> None:
        pass


def _objective(hparams, reporter):
    reporter.broadcast(float(hparams["n"]), 0)
    return float(hparams["n"])


def test_a_custom_optimizer_proposing_numpy_values_gets_python_values_recorded(tmp_path: Path) -> None:
    # it used to record {"n": "32"} in the journal and die with "int64 is not JSON serializable";
    # create_trial now turns NumPy scalars into the Python values they hold
    result = lm.search(_objective, SPACE, metric="m", optimizer=_NumpyOptimizer(seed=0), max_epochs=1,
                       num_trials=2, workers=1, exp_dir=tmp_path / "study", verbose=False)
    assert result.stop_reason == "finished" and len(result.trials) == 2
    assert all(type(t.config["n"]) is int and t.config["n"] in (16, 32) for t in result.trials)
    assert '"n":"' not in (tmp_path / "study" / "journal.jsonl").read_text()


def test_a_grid_holds_the_bounds_as_given_and_readable_points(tmp_path: Path) -> None:
    # exp(log(1e-9)) gave 1.0000000000000007e-09 and the top 9.999999999999982e-09 before
    space = lm.Searchspace(lr=lm.Double(1e-4, 1e-1, log=True), p=lm.Double(0.1, 0.2))
    assert space["lr"].grid(4) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert space["p"].grid(3) == [0.1, 0.15, 0.2]
    assert lm.Double(1e-9, 1e-8, log=True).decode(0.0) == 1e-9 and lm.Double(1e-9, 1e-8, log=True).decode(1.0) == 1e-8
    result = lm.search(_objective_of_lr, space, metric="m", optimizer=lm.GridSearch(grid_size=2), max_epochs=1,
                       workers=1, exp_dir=tmp_path / "study", verbose=False)
    assert sorted((t.config["lr"], t.config["p"]) for t in result.trials) == [
        (1e-4, 0.1), (1e-4, 0.2), (1e-1, 0.1), (1e-1, 0.2)
    ]
    assert sorted(t.final_metric for t in result.trials) == [1e-4, 1e-4, 1e-1, 1e-1]  # what the trials got


def _objective_of_lr(hparams, reporter):
    reporter.broadcast(hparams["lr"], 0)
    return hparams["lr"]


def test_the_original_maggy_tuple_form_takes_numpy_arrays() -> None:
    space = lm.Searchspace(lr=("DOUBLE", np.array([1e-3, 1e-1])), n=("INTEGER", np.array([1, 5])))
    assert space["lr"] == lm.Double(1e-3, 1e-1) and space["n"] == lm.Integer(1, 5)
    assert type(space["n"].low) is int  # type: ignore[attr-defined]
