"""Reports only CONTINUE can answer are sent without waiting (and still recorded)."""

from __future__ import annotations

from typing import Any

import pytest

from lightning_maggy.driver.controller import Controller
from lightning_maggy.driver.journal import Journal, read_journal
from lightning_maggy.earlystop import MedianStoppingRule
from lightning_maggy.exceptions import ProtocolError
from lightning_maggy.optimizers import ASHA, RandomSearch
from lightning_maggy.optimizers.base import ALWAYS
from lightning_maggy.searchspace import Double, Searchspace
from lightning_maggy.transport.messages import decode, encode
from lightning_maggy.trial import Decision, TrialState

SPACE = Searchspace(x=Double(0.0, 1.0))
KEY = b"k"


_journals: list[Journal] = []


@pytest.fixture(autouse=True)
def _close_journals():
    yield
    while _journals:
        _journals.pop().close()


def _controller(tmp_path, optimizer, **kw: Any) -> Controller:
    settings: dict[str, Any] = {"direction": "max", "max_epochs": 9, "num_trials": 4}
    settings.update(kw)
    _journals.append(Journal(tmp_path / "j.jsonl"))
    return Controller(optimizer=optimizer, searchspace=SPACE, journal=_journals[-1], **settings)


def _wire(msg: dict[str, Any]) -> dict[str, Any]:
    return decode(encode(msg, KEY), KEY)


def _start(ctl: Controller) -> dict[str, Any]:
    ctl.handle(b"w", _wire({"type": "register", "worker_id": 0, "pid": 1, "host": "h"}))
    ((_, reply),) = ctl.handle(b"w", _wire({"type": "get", "worker_id": 0}))
    return reply["trial"]


def test_random_search_reports_need_no_answer_and_are_recorded(tmp_path):
    ctl = _controller(tmp_path, RandomSearch(seed=0))
    trial = _start(ctl)
    assert trial["async_until"] == ALWAYS
    for epoch in range(3):
        out = ctl.handle(b"w", _wire({"type": "report", "worker_id": 0, "trial_id": trial["trial_id"], "attempt": 1,
                                      "epoch": epoch, "value": 0.1 * epoch, "sync": False}))
        assert out == []  # nothing is sent back
    assert ctl.trials[trial["trial_id"]].history == (0.0, 0.1, 0.2)
    reports = [e for e in read_journal(tmp_path / "j.jsonl") if e["event"] == "report"]
    assert [r["epoch"] for r in reports] == [0, 1, 2]


def test_asha_waits_only_for_the_rung_report(tmp_path):
    ctl = _controller(tmp_path, ASHA(reduction_factor=3, resource_min=3))  # rungs 3, 9
    trial = _start(ctl)
    assert trial["budget"] == 3 and trial["async_until"] == 2  # epochs 0, 1 cannot be paused
    for epoch in range(2):
        assert ctl.handle(b"w", _wire({"type": "report", "worker_id": 0, "trial_id": trial["trial_id"], "attempt": 1,
                                       "epoch": epoch, "value": 0.5, "sync": False})) == []
    ((_, reply),) = ctl.handle(b"w", _wire({"type": "report", "worker_id": 0, "trial_id": trial["trial_id"], "attempt": 1,
                                            "epoch": 2, "value": 0.5}))
    assert reply["decision"] == Decision.PAUSE.value
    top = ctl.trials[trial["trial_id"]].evolve(budget=9)
    assert ctl.optimizer.continue_until(top) == ALWAYS  # the top rung is never paused


@pytest.mark.parametrize("settings", [{"timeout": 60.0}, {"earlystop": MedianStoppingRule()}])
def test_every_report_waits_when_any_report_may_stop_the_trial(tmp_path, settings):
    ctl = _controller(tmp_path, RandomSearch(seed=0), **settings)
    assert _start(ctl)["async_until"] == 0


def test_a_custom_on_report_makes_every_report_wait(tmp_path):
    class Custom(RandomSearch):
        def on_report(self, trial):
            return Decision.STOP if trial.history[-1] < 0 else Decision.CONTINUE

    ctl = _controller(tmp_path, Custom(seed=0))
    trial = _start(ctl)
    assert trial["async_until"] == 0
    ((_, reply),) = ctl.handle(b"w", _wire({"type": "report", "worker_id": 0, "trial_id": trial["trial_id"], "attempt": 1,
                                            "epoch": 0, "value": -1.0}))
    assert reply["decision"] == "stop"
    ctl.handle(b"w", _wire({"type": "final", "worker_id": 0, "trial_id": trial["trial_id"], "status": "stopped",
                            "attempt": 1, "metric": None, "error": None, "error_type": None, "fatal": False}))
    assert ctl.trials[trial["trial_id"]].state is TrialState.STOPPED


def test_sync_must_be_a_bool():
    with pytest.raises(ProtocolError, match="sync"):
        decode(encode({"type": "report", "worker_id": 0, "trial_id": "t", "attempt": 1, "epoch": 0, "value": 1.0,
                       "sync": "no"}, KEY), KEY)
