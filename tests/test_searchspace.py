"""Searchspace: validation, sampling, grids and the unit-cube encoding (property-based)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_maggy.exceptions import MaggyError, SearchspaceError
from lightning_maggy.searchspace import Categorical, Discrete, Double, Hyperparameter, Integer, Searchspace

# -- strategies ---------------------------------------------------------------------------------


@st.composite
def doubles(draw: st.DrawFn) -> Double:
    if draw(st.booleans()):
        low = draw(st.floats(1e-6, 1e3))
        return Double(low, low * draw(st.floats(1.001, 1e4)), log=True)
    low = draw(st.floats(-1e3, 1e3))
    return Double(low, low + draw(st.floats(1e-3, 1e3)))


@st.composite
def integers(draw: st.DrawFn) -> Integer:
    if draw(st.booleans()):
        low = draw(st.integers(1, 1000))
        return Integer(low, low + draw(st.integers(1, 10_000)), log=True)
    low = draw(st.integers(-1000, 1000))
    return Integer(low, low + draw(st.integers(1, 2000)))


def _unique_json(values: list) -> list:
    seen, out = set(), []
    for v in values:
        key = json.dumps(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def _unique_numbers(values: list) -> list:
    """Distinct numbers (1 and 1.0 are one number: Discrete refuses both)."""
    seen: set = set()
    return [v for v in values if not (v in seen or seen.add(v))]


numbers = st.one_of(st.integers(-10_000, 10_000), st.floats(-1e6, 1e6, allow_nan=False))
scalars = st.one_of(st.text(max_size=5), numbers, st.booleans(), st.none())
discretes = st.lists(numbers, min_size=1, max_size=8).map(_unique_numbers).map(Discrete)
categoricals = st.lists(scalars, min_size=1, max_size=8).map(_unique_json).map(Categorical)
hyperparameters = st.one_of(doubles(), integers(), discretes, categoricals)


@st.composite
def spaces(draw: st.DrawFn) -> Searchspace:
    params = draw(st.lists(hyperparameters, min_size=1, max_size=4))
    return Searchspace(**{f"p{i}": hp for i, hp in enumerate(params)})


# -- validation errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: Double(1.0, 1.0), "low must be smaller than high"),
        (lambda: Double(2.0, 1.0), "low must be smaller than high"),
        (lambda: Integer(5, 5), "low must be smaller than high"),
        (lambda: Double(0.0, 1.0, log=True), "log scale needs low > 0"),
        (lambda: Double(-1.0, 1.0, log=True), "log scale needs low > 0"),
        (lambda: Integer(0, 10, log=True), "log scale needs low > 0"),
        (lambda: Double(0.0, math.inf), "bounds must be finite"),
        (lambda: Double(math.nan, 1.0), "bounds must be finite"),
        (lambda: Double("a", 1.0), "must be numbers"),
        (lambda: Double(True, 2.0), "must be numbers"),
        (lambda: Integer(1.5, 3), "bounds must be ints"),
        (lambda: Integer(1, 3.0), "bounds must be ints"),
        (lambda: Discrete([]), "needs at least one value"),
        (lambda: Categorical([]), "needs at least one value"),
        (lambda: Categorical("abc"), "expected a list of values"),
        (lambda: Discrete(["a", "b"]), "values must be numbers"),
        (lambda: Discrete([True, 1]), "values must be numbers"),
        (lambda: Categorical([object()]), "is not allowed"),
        (lambda: Categorical([math.nan]), "is not allowed"),
        (lambda: Categorical(["a", "a"]), "must be distinct"),
        (lambda: Searchspace(), "is empty"),
        (lambda: Searchspace(**{"not valid": Double(0.0, 1.0)}), "not a valid Python identifier"),
        (lambda: Searchspace(lr="fast"), "cannot understand"),
        (lambda: Searchspace(lr=("DOUBLE", [0.1])), "needs [low, high]"),
        (lambda: Searchspace(lr=("BANANA", [0.1, 0.2])), "cannot understand"),
    ],
)
def test_declaration_errors(make, fragment: str) -> None:
    with pytest.raises(SearchspaceError) as info:
        make()
    assert fragment in str(info.value)
    assert isinstance(info.value, (MaggyError, ValueError))


SPACE = Searchspace(
    lr=Double(1e-4, 1e-1, log=True),
    hidden=Integer(16, 256, log=True),
    batch_size=Discrete([128, 32, 64]),
    activation=Categorical(["relu", "gelu"]),
)
GOOD = {"lr": 0.01, "hidden": 32, "batch_size": 64, "activation": "gelu"}


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({**GOOD, "momentum": 0.9}, "unknown names ['momentum']"),
        ({k: v for k, v in GOOD.items() if k != "lr"}, "missing names ['lr']"),
        ({**GOOD, "lr": 1.0}, "'lr': value 1.0 is outside"),
        ({**GOOD, "lr": "0.01"}, "'lr': value '0.01' is outside"),
        ({**GOOD, "hidden": 32.5}, "'hidden': value 32.5"),
        ({**GOOD, "hidden": True}, "'hidden': value True"),
        ({**GOOD, "batch_size": 48}, "'batch_size': value 48"),
        ({**GOOD, "activation": "tanh"}, "'activation': value 'tanh'"),
    ],
)
def test_config_validation_errors(config: dict, fragment: str) -> None:
    SPACE.validate(GOOD)
    with pytest.raises(SearchspaceError) as info:
        SPACE.validate(config)
    assert fragment in str(info.value)


def test_other_errors() -> None:
    with pytest.raises(SearchspaceError, match="must be a dict"):
        SPACE.validate([("lr", 0.1)])  # type: ignore[arg-type]
    with pytest.raises(SearchspaceError, match="Unknown hyperparameter 'momentum'"):
        SPACE["momentum"]
    with pytest.raises(SearchspaceError, match="dimension 3, the space has 4"):
        SPACE.decode([0.5, 0.5, 0.5])
    with pytest.raises(SearchspaceError, match="grid_size must be a positive int"):
        SPACE.grid(0)
    with pytest.raises(SearchspaceError):
        SPACE.encode({**GOOD, "lr": 5.0})


def test_original_maggy_tuple_form_and_discrete_is_sorted() -> None:
    space = Searchspace(lr=("DOUBLE", [0.001, 0.1]), units=("INTEGER", [8, 64]), act=("CATEGORICAL", ["a", "b"]))
    assert space["lr"] == Double(0.001, 0.1) and space["units"] == Integer(8, 64)
    assert SPACE["batch_size"].values == [32, 64, 128]  # type: ignore[attr-defined]


# -- sampling -----------------------------------------------------------------------------------


@given(space=spaces(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_samples_are_valid_and_reproducible(space: Searchspace, seed: int) -> None:
    rng1, rng2 = np.random.default_rng(seed), np.random.default_rng(seed)
    first = [space.sample(rng1) for _ in range(5)]
    second = [space.sample(rng2) for _ in range(5)]
    assert first == second
    for config in first:
        space.validate(config)
        json.dumps(config)  # plain JSON-able values


@given(hp=st.one_of(doubles(), integers()))
@settings(max_examples=200, deadline=None)
def test_samples_at_the_edges_of_the_unit_interval_are_valid(hp: Hyperparameter) -> None:
    class Edge:  # a generator that returns the extreme values rng.random() can return
        def __init__(self, u: float) -> None:
            self.u = u

        def random(self) -> float:
            return self.u

        def integers(self, low: int, high: int) -> int:
            return low if self.u == 0.0 else high - 1

    for u in (0.0, 1.0 - 2**-53):
        assert hp.contains(hp.sample(Edge(u)))  # type: ignore[arg-type]


# -- encode / decode ---------------------------------------------------------------------------


@given(space=spaces(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None)
def test_decode_encode_round_trip(space: Searchspace, seed: int) -> None:
    config = space.sample(np.random.default_rng(seed))
    point = space.encode(config)
    assert point.shape == (len(space),)
    assert np.all((point >= 0.0) & (point <= 1.0))
    back = space.decode(point)
    space.validate(back)
    for name, hp in space.items():
        if isinstance(hp, Double):
            assert back[name] == pytest.approx(config[name], rel=1e-9, abs=1e-9)
        else:
            assert back[name] == config[name]
            assert type(back[name]) is type(config[name])


@given(space=spaces(), data=st.data())
@settings(max_examples=300, deadline=None)
def test_decode_of_any_point_of_the_unit_cube_is_valid(space: Searchspace, data: st.DataObject) -> None:
    point = data.draw(st.lists(st.floats(0.0, 1.0), min_size=len(space), max_size=len(space)))
    space.validate(space.decode(point))


@given(space=spaces())
@settings(max_examples=100, deadline=None)
def test_decode_clamps_points_outside_the_cube(space: Searchspace) -> None:
    space.validate(space.decode([-3.0] * len(space)))
    space.validate(space.decode([7.0] * len(space)))


def test_integer_cells_are_equal_width() -> None:
    hp = Integer(0, 3)
    assert [hp.encode(v) for v in range(4)] == [0.125, 0.375, 0.625, 0.875]
    assert [hp.decode(u) for u in (0.0, 0.24, 0.26, 0.99, 1.0)] == [0, 0, 1, 3, 3]


# -- grids ---------------------------------------------------------------------------------


@given(space=spaces(), grid_size=st.integers(1, 6))
@settings(max_examples=200, deadline=None)
def test_grid_sizes_and_validity(space: Searchspace, grid_size: int) -> None:
    grid = space.grid(grid_size)
    expected = 1
    for _, hp in space.items():
        axis = hp.grid(grid_size)
        assert len({json.dumps(v) for v in axis}) == len(axis), "grid axis has duplicates"
        for v in axis:
            assert hp.contains(v), f"{hp!r}.grid({grid_size}) gave {v!r}"
        if isinstance(hp, Double):
            assert len(axis) == grid_size
        elif isinstance(hp, Integer):
            count = hp.high - hp.low + 1
            if hp.log:
                assert 1 <= len(axis) <= min(count, grid_size)
            else:
                assert len(axis) == min(count, grid_size)
        else:
            assert axis == hp.values  # type: ignore[attr-defined]
        expected *= len(axis)
    assert len(grid) == space.grid_count(grid_size) == expected
    assert len({json.dumps(c, sort_keys=True) for c in grid}) == len(grid)
    for config in grid:
        space.validate(config)


def test_grid_hand_computed() -> None:
    space = Searchspace(a=Double(0.0, 1.0), b=Categorical(["x", "y"]), c=Integer(1, 3))
    assert space.grid_count(3) == 3 * 2 * 3
    assert space.grid(3)[:4] == [
        {"a": 0.0, "b": "x", "c": 1},
        {"a": 0.0, "b": "x", "c": 2},
        {"a": 0.0, "b": "x", "c": 3},
        {"a": 0.0, "b": "y", "c": 1},
    ]
    assert space.grid(1) == [{"a": 0.5, "b": "x", "c": 2}, {"a": 0.5, "b": "y", "c": 2}]
    assert Double(1e-4, 1e-1, log=True).grid(2) == pytest.approx([1e-4, 1e-1])


# -- serialization ---------------------------------------------------------------------------


@given(space=spaces())
@settings(max_examples=200, deadline=None)
def test_to_dict_from_dict_round_trip(space: Searchspace) -> None:
    data = space.to_dict()
    assert Searchspace.from_dict(data) == space
    assert Searchspace.from_dict(json.loads(json.dumps(data))) == space
    assert Searchspace.from_dict(data).names() == space.names()


def test_the_dict_form_any_case_as_a_yaml_file_writes_it() -> None:
    space = Searchspace(
        lr={"type": "double", "low": 1e-4, "high": 0.1, "log": True},
        hidden={"type": "Integer", "low": 16, "high": 256},
        batch_size={"type": "discrete", "values": [64, 32]},
        act={"type": "CATEGORICAL", "values": ["relu", "gelu"]},
    )
    assert space == Searchspace(
        lr=Double(1e-4, 0.1, log=True), hidden=Integer(16, 256), batch_size=Discrete([32, 64]),
        act=Categorical(["relu", "gelu"]),
    )


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ({"type": "double", "low": 0.1}, ["'lr'", "missing high", "{type: double, low: <number>, high: <number>"]),
        ({"type": "double", "low": 0.1, "high": 1, "lg": True}, ["'lr'", "unknown lg"]),
        ({"type": "float", "low": 0.1, "high": 1}, ["'lr'", "'float' is not one of double, integer"]),
        ({"type": "double", "low": "1e-4", "high": 0.1}, ["'lr'", "low='1e-4' is a string", "1.0e-4"]),
        ({"type": "double", "low": 0.1, "high": 1, "log": "yes"}, ["'lr'", "log='yes' must be true or false"]),
        ({"type": "integer", "low": 1.5, "high": 3}, ["'lr'", "bounds must be ints"]),
        ({"type": "double", "low": 1.0, "high": 0.5}, ["'lr'", "low must be smaller than high"]),
        ({"type": "discrete", "values": ["a"]}, ["'lr'", "values must be numbers"]),
        ({"type": "categorical"}, ["'lr'", "missing values", "{type: categorical, values: [<value>, ...]}"]),
        (0.1, ["'lr'", "cannot understand 0.1", "'type': 'double'"]),
    ],
)
def test_a_bad_dict_form_names_the_entry_and_the_form_expected(spec, fragments: list[str]) -> None:
    with pytest.raises(SearchspaceError) as info:
        Searchspace(lr=spec)
    for fragment in fragments:
        assert fragment in str(info.value)
