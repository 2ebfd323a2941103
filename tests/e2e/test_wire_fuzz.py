"""10,000 hostile messages during a live search change nothing.

A real search (zmq server, local worker processes, a small function-trial random search) runs
twice with the same seed: once in peace, once while an attacker on the same machine floods the
server's socket with hostile messages drawn by hypothesis -- unsigned, wrongly signed,
truncated, oversized, ill-framed, ill-typed but validly signed, captured legitimate messages
replayed, and validly signed reports, FINALs and heartbeats naming wrong trial ids or wrong
attempts. The record (trial ids, states, histories, attempts, final metrics) must be the same,
the search must finish normally, and every message the transport must refuse is counted.

The attacker holds the experiment's secret for the "validly signed" cases: the test checks that
even an insider's replays and stale or mistaken messages change nothing (a key holder sending
a *correct* message as a worker is, by definition, a worker).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import lightning_maggy as lm
from lightning_maggy.driver.journal import read_journal
from lightning_maggy.transport import zmq_transport
from lightning_maggy.transport.messages import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, Session, encode, sign

pytestmark = pytest.mark.slow

N_MESSAGES = 10_000
SEED = 11
NUM_TRIALS = 6
MAX_EPOCHS = 3


class _Tap:
    """What the attacker learns: the server's address, the secret, and legitimate traffic."""

    def __init__(self) -> None:
        self.address: str | None = None
        self.key: bytes | None = None
        self.captured: list[list[bytes]] = []
        self.trial_ids: set[str] = set()
        self.lock = threading.Lock()


def _tapping_server(tap: _Tap) -> type:
    class TappingServer(zmq_transport.ZmqServer):
        def __init__(self, key: bytes, *args: Any, **kwargs: Any) -> None:
            super().__init__(key, *args, **kwargs)
            tap.address, tap.key = self.address, key

        def _recv_frames(self, timeout: float) -> tuple[bytes, list[bytes]] | None:
            item = super()._recv_frames(timeout)
            if item is not None and not item[0].startswith(b"attacker"):
                peer, frames = item
                with tap.lock:
                    tap.captured.append([bytes(f) for f in frames])
                    if len(frames) == 2:
                        try:
                            tid = json.loads(frames[1]).get("trial_id")
                        except ValueError:
                            tid = None
                        if isinstance(tid, str):
                            tap.trial_ids.add(tid)
            return item

    return TappingServer


def _objective(gate: str) -> Any:
    def objective(hparams: dict[str, Any], reporter: Any) -> float:
        value = 0.0
        for step in range(reporter.budget):
            if step == reporter.budget - 1:
                while not os.path.exists(gate):  # the attack happens while trials run
                    time.sleep(0.01)
            value = round(hparams["a"] * (step + 1) + hparams["b"], 6)
            reporter.broadcast(value, step)
        return value

    return objective


SPACE = lm.Searchspace(a=lm.Double(0.0, 1.0), b=lm.Integer(0, 9))


def _search(exp_dir: Path, gate: str) -> Any:
    return lm.search(
        _objective(gate), SPACE, metric="score", optimizer="random", num_trials=NUM_TRIALS,
        max_epochs=MAX_EPOCHS, workers=2, seed=SEED, exp_dir=exp_dir, verbose=False,
    )


def _record(result: Any) -> dict[str, Any]:
    return {
        t.trial_id: (t.state.value, tuple(t.history), t.attempt, t.retries, t.final_metric, t.error)
        for t in result.trials
    }


# -- hostile messages --------------------------------------------------------------------------

#: field -> values no message may carry there (each makes any message invalid)
ILL_TYPED: dict[str, list[Any]] = {
    "worker_id": [None, "7", 1.5, True, [], {}],
    "seq": [None, "7", 1.5, True, 0, -3],
    "sid": [None, 7, "", "s" * 65],
    "v": [None, 1, 3, "2"],
    "type": ["shutdown", None, 3, ["get"]],
    "missing": [None],
}

KINDS = ["unsigned", "wrong key", "truncated", "oversized", "frames", "garbage", "ill-typed", "replay",
         "wrong trial id", "wrong attempt"]

recipes = st.tuples(
    st.sampled_from(KINDS),
    st.sampled_from(["report", "final", "heartbeat", "register", "get"]),
    st.integers(0, 3),  # worker id (0 and 1 are real workers)
    st.integers(0, 2**31),  # a number to vary the message with
    st.booleans(),
)


def _body(kind: str, wid: int, tid: str, attempt: int, n: int, sync: bool) -> dict[str, Any]:
    if kind == "report":
        return {"type": "report", "worker_id": wid, "trial_id": tid, "attempt": attempt, "epoch": n % 5,
                "value": (n % 1000) / 7.0, "sync": sync}
    if kind == "final":
        return {"type": "final", "worker_id": wid, "trial_id": tid, "attempt": attempt,
                "status": ["ok", "stopped", "paused", "failed", "dropped"][n % 5], "metric": 1e9,
                "error": None, "error_type": None, "fatal": bool(n % 2)}
    if kind == "heartbeat":
        return {"type": "heartbeat", "worker_id": wid, "trial_id": tid, "attempt": attempt}
    if kind == "register":
        return {"type": "register", "worker_id": wid, "pid": n, "host": "attacker"}
    return {"type": "get", "worker_id": wid}


class Attack:
    """Turns recipes into frames; counts what the transport must drop."""

    def __init__(self, tap: _Tap, recipe_list: list[tuple[Any, ...]]) -> None:
        self.tap = tap
        self.recipes = recipe_list
        self.must_drop = 0
        self.sent = 0
        self.replays = 0

    def frames(self, i: int) -> list[bytes]:
        first_kind, msg_kind, wid, n, sync = self.recipes[i % len(self.recipes)]
        kind = KINDS[(KINDS.index(first_kind) + i) % len(KINDS)]  # every kind, whatever was drawn
        n = (n + i * 7919) % 2**31
        key = self.tap.key
        assert key is not None
        with self.tap.lock:
            real_ids = sorted(self.tap.trial_ids)
            captured = list(self.tap.captured)
        if kind == "wrong trial id":  # validly signed, a trial that does not exist
            tid = f"{n:016x}"[-16:]
            self.sent += 1
            return encode(_body(msg_kind if msg_kind in ("report", "final", "heartbeat") else "report",
                                wid, tid, 1 + n % 3, n, sync), key)
        if kind == "wrong attempt":  # validly signed, a real trial, an attempt it never had
            tid = real_ids[n % len(real_ids)] if real_ids else "0" * 16
            self.sent += 1
            return encode(_body(msg_kind if msg_kind in ("report", "final", "heartbeat") else "final",
                                wid, tid, 2 + n % 50, n, sync), key)
        self.must_drop += 1
        self.sent += 1
        if kind == "replay" and captured:
            self.replays += 1
            return captured[n % len(captured)]
        body = _body(msg_kind, wid, real_ids[0] if real_ids else "t", 1, n, sync)
        if kind == "unsigned":
            payload = json.dumps({**body, "v": PROTOCOL_VERSION, "sid": "x", "seq": 1 + n}).encode()
            return [b"", payload]
        if kind == "wrong key":
            return encode(body, b"not-the-experiment-secret")
        if kind == "truncated":
            sig, payload = encode(body, key)
            return [sig, payload[: max(1, len(payload) - 1 - n % 20)]]
        if kind == "oversized" and n % 100 == 0:  # ~1 in 100 of these: 1.1 MB each, validly signed
            payload = json.dumps({**body, "v": PROTOCOL_VERSION, "sid": "big", "seq": 1, "pad": "x" * (MAX_MESSAGE_BYTES + 1000)}).encode()
            return [sign(key, payload), payload]
        if kind in ("oversized", "frames"):
            good = encode(body, key)
            return [good[0]] if n % 3 == 0 else [*good, b"extra"] if n % 3 == 1 else [b"", b"", b""]
        if kind == "garbage":
            payload = bytes((n >> s) & 0xFF for s in range(0, 31, 3)) + b"{"
            return [sign(key, payload), payload]
        # ill-typed, validly signed: one field every message has gets a value it may not have
        bad = {**body, "v": PROTOCOL_VERSION, "sid": Session().sid, "seq": 1}
        field = sorted(ILL_TYPED)[n % len(ILL_TYPED)]
        values = ILL_TYPED[field]
        bad[field] = values[(n // 7) % len(values)]
        if field == "missing":
            del bad["worker_id"]
        payload = json.dumps(bad).encode()
        return [sign(key, payload), payload]


def _run_attack(attack: Attack, gate: str, errors: list[BaseException]) -> None:
    try:
        deadline = time.monotonic() + 60
        while (attack.tap.address is None or len(attack.tap.trial_ids) < 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert attack.tap.address is not None, "the server never started"
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, b"attacker-" + os.urandom(4).hex().encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(attack.tap.address)
        try:
            for i in range(N_MESSAGES):
                sock.send_multipart(attack.frames(i))
                while sock.poll(0, zmq.POLLIN):  # drops and dones addressed to the attacker
                    sock.recv_multipart()
            time.sleep(0.5)
        finally:
            sock.close(0)
            ctx.term()
    except BaseException as err:  # noqa: BLE001 - reported by the test
        errors.append(err)
    finally:
        Path(gate).touch()


@settings(max_examples=1, deadline=None, phases=[Phase.generate], derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(recipe_list=st.lists(recipes, min_size=60, max_size=60))
def test_hostile_messages_during_a_live_search_change_nothing(
    recipe_list: list[tuple[Any, ...]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("fuzz")
    started = time.monotonic()
    peace_gate = base / "peace-gate"
    peace_gate.touch()
    peaceful = _search(base / "peace", str(peace_gate))

    tap = _Tap()
    attack = Attack(tap, recipe_list)
    gate = str(base / "attack-gate")
    errors: list[BaseException] = []
    original = zmq_transport.ZmqServer
    zmq_transport.ZmqServer = _tapping_server(tap)  # type: ignore[misc]
    try:
        attacker = threading.Thread(target=_run_attack, args=(attack, gate, errors), daemon=True)
        attacker.start()
        attacked = _search(base / "attacked", gate)
        attacker.join(30)
    finally:
        zmq_transport.ZmqServer = original  # type: ignore[misc]
    assert not errors, errors
    assert attack.sent == N_MESSAGES

    assert peaceful.stop_reason == attacked.stop_reason == "finished"
    assert len(peaceful.trials) == NUM_TRIALS
    assert all(t.state is lm.TrialState.COMPLETED and t.attempt == 1 for t in peaceful.trials)
    assert _record(attacked) == _record(peaceful)
    assert attacked.best_trial.trial_id == peaceful.best_trial.trial_id
    for t in attacked.trials:
        assert not any(math.isnan(v) for v in t.history) and len(t.history) == MAX_EPOCHS
    transport = [e for e in read_journal(Path(attacked.exp_dir) / "journal.jsonl") if e["event"] == "transport"]
    assert transport and transport[0]["dropped_messages"] == attack.must_drop
    assert transport[0]["refused_messages"] >= N_MESSAGES - attack.must_drop  # the signed, wrong ones
    assert attack.replays > 100
    assert time.monotonic() - started < 60
