"""The controller test harness: a real controller with a fake clock and a real journal, driven
through ``handle()`` as the transport would (every message goes through encode + decode, and
every reply is checked to be a valid wire message). Shared by the controller's test files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightning_maggy.driver.controller import Controller
from lightning_maggy.driver.journal import Journal
from lightning_maggy.optimizers import AbstractOptimizer
from lightning_maggy.searchspace import Discrete, Double, Searchspace
from lightning_maggy.transport.messages import decode, encode
from lightning_maggy.trial import Trial, TrialState

KEY = b"controller-test-key"
Outgoing = list[tuple[bytes, dict[str, Any]]]

SPACE = Searchspace(lr=Double(1e-4, 1e-1, log=True), x=Discrete([1, 2, 3, 4]))
GRID3 = Searchspace(x=Discrete([1, 2, 3]))


def wire(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` exactly as the server's transport hands it to the controller."""
    return decode(encode(message, KEY), KEY)


def rpc(wid: int) -> bytes:
    return f"w{wid}-rpc".encode()


def hb(wid: int) -> bytes:
    return f"w{wid}-hb".encode()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Harness:
    """A controller plus helpers that speak for workers and check every reply."""

    def __init__(self, tmp_path: Path, optimizer: AbstractOptimizer, **kwargs: Any) -> None:
        self.clock = FakeClock()
        self.journal_path = tmp_path / "journal.jsonl"
        self.journal = Journal(self.journal_path)
        self.ended: list[tuple[str, TrialState]] = []
        settings: dict[str, Any] = {
            "searchspace": SPACE,
            "direction": "max",
            "max_epochs": 3,
            "num_trials": 4,
            "seed": 0,
        }
        settings.update(kwargs)
        self.ctl = Controller(
            optimizer=optimizer,
            journal=self.journal,
            clock=self.clock,
            on_trial_end=lambda t: self.ended.append((t.trial_id, t.state)),
            **settings,
        )

    # -- plumbing ---------------------------------------------------------------------------
    @staticmethod
    def checked(out: Outgoing) -> Outgoing:
        for peer, message in out:
            assert isinstance(peer, bytes)
            assert decode(encode(message, KEY), KEY)["type"] == message["type"]  # a valid wire message
        return out

    def handle(self, wid: int, message: dict[str, Any], peer: bytes | None = None) -> Outgoing:
        return self.checked(self.ctl.handle(peer or rpc(wid), wire({"worker_id": wid, **message})))

    def tick(self) -> Outgoing:
        return self.checked(self.ctl.tick())

    # -- a worker's messages ------------------------------------------------------------------
    def register(self, wid: int) -> Outgoing:
        return self.handle(wid, {"type": "register", "pid": 4000 + wid, "host": "testhost"})

    def get(self, wid: int) -> Outgoing:
        return self.handle(wid, {"type": "get"})

    def attempt_of(self, tid: str) -> int:
        """The trial's current attempt (what its rightful worker names)."""
        trial = self.ctl.trials.get(tid)
        return max(1, trial.attempt) if trial is not None else 1

    def report(self, wid: int, tid: str, epoch: int, value: float, attempt: int | None = None) -> str:
        """The decision, or "drop" when the server refuses the report as stale."""
        attempt = self.attempt_of(tid) if attempt is None else attempt
        out = self.handle(wid, {"type": "report", "trial_id": tid, "attempt": attempt, "epoch": epoch, "value": value})
        assert len(out) == 1 and out[0][0] == rpc(wid) and out[0][1]["type"] in ("decision", "drop")
        if out[0][1]["type"] == "drop":
            assert out[0][1]["trial_id"] == tid and out[0][1]["attempt"] == attempt and out[0][1]["reason"]
            return "drop"
        return out[0][1]["decision"]

    def final(
        self,
        wid: int,
        tid: str,
        status: str = "ok",
        metric: float | None = None,
        error: str | None = None,
        error_type: str | None = None,
        fatal: bool = False,
        attempt: int | None = None,
    ) -> Outgoing:
        return self.handle(
            wid,
            {
                "type": "final",
                "trial_id": tid,
                "attempt": self.attempt_of(tid) if attempt is None else attempt,
                "status": status,
                "metric": metric,
                "error": error,
                "error_type": error_type,
                "fatal": fatal,
            },
        )

    def heartbeat(self, wid: int, tid: str | None = None, attempt: int | None = None) -> Outgoing:
        if tid is not None and attempt is None:
            attempt = self.attempt_of(tid)
        return self.handle(wid, {"type": "heartbeat", "trial_id": tid, "attempt": attempt}, peer=hb(wid))

    # -- reading replies ----------------------------------------------------------------------
    @staticmethod
    def trial_for(out: Outgoing, wid: int) -> dict[str, Any]:
        """The trial assignment sent to worker ``wid`` in ``out`` (exactly one)."""
        sent = [m["trial"] for p, m in out if p == rpc(wid) and m["type"] == "trial"]
        assert len(sent) == 1, f"expected one trial for worker {wid}, got {out}"
        return sent[0]

    def start(self, wid: int) -> dict[str, Any]:
        """Worker ``wid`` asks for work and must get a trial."""
        return self.trial_for(self.get(wid), wid)

    def trial(self, tid: str) -> Trial:
        return self.ctl.trials[tid]


def done_peers(out: Outgoing) -> list[bytes]:
    return sorted(p for p, m in out if m["type"] == "done")


def same_floats(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> bool:
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b))
