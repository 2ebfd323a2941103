"""One contract for both transports: the zmq pair over real 127.0.0.1 tcp sockets, and the
in-process twin the controller tests use.

Attacks are delivered on the raw carrier (a plain zmq DEALER socket for zmq, ``inject`` for the
in-process server), so what the server sees is exactly what an attacker could put on the wire.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import zmq

from lightning_maggy.exceptions import ProtocolError
from lightning_maggy.transport import InProcessServer
from lightning_maggy.transport.messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Session,
    decode,
    encode,
    sign,
)
from lightning_maggy.transport.zmq_transport import ZmqClient, ZmqServer

KEY = b"experiment-secret-0123456789abcdef"
OTHER_KEY = b"someone-elses-secret-fedcba987654"
RECV_DEADLINE = 5.0


class Carrier:
    """A server, clients connected to it, and a raw channel that puts arbitrary frames on it."""

    def __init__(
        self,
        server: Any,
        connect: Callable[[str], Any],
        raw_send: Callable[[list[bytes]], None],
        close_extra: Callable[[], None],
    ) -> None:
        self.server = server
        self._connect = connect
        self.raw_send = raw_send
        self._close_extra = close_extra
        self.clients: list[Any] = []

    def connect(self, identity: str) -> Any:
        client = self._connect(identity)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self._close_extra()
        self.server.close()


def _zmq_carrier() -> Carrier:
    server = ZmqServer(KEY, host="127.0.0.1")
    assert server.address.startswith("tcp://127.0.0.1:")
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.IDENTITY, b"attacker")
    raw.connect(server.address)

    def raw_send(frames: list[bytes]) -> None:
        raw.send_multipart(frames)

    def close_extra() -> None:
        raw.close(0)
        ctx.term()

    return Carrier(server, lambda ident: ZmqClient(server.address, KEY, identity=ident), raw_send, close_extra)


def _inprocess_carrier() -> Carrier:
    server = InProcessServer(KEY)
    return Carrier(server, server.connect, lambda frames: server.inject(b"attacker", frames), lambda: None)


@pytest.fixture(params=["zmq", "inprocess"])
def carrier(request: pytest.FixtureRequest) -> Iterator[Carrier]:
    c = _zmq_carrier() if request.param == "zmq" else _inprocess_carrier()
    try:
        yield c
    finally:
        c.close()


def _recv_valid(server: Any, deadline: float = RECV_DEADLINE) -> tuple[bytes, dict[str, Any]]:
    """The next valid message; fails the test if none arrives before the deadline."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        item = server.recv(timeout=0.1)
        if item is not None:
            return item
    pytest.fail(f"no valid message within {deadline} s (dropped={server.dropped}, last={server.last_drop_reason})")


def _signed(payload: bytes, key: bytes = KEY) -> list[bytes]:
    return [sign(key, payload), payload]


def _json(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


GET = {"v": PROTOCOL_VERSION, "type": "get", "worker_id": 7}
REPORT = {
    "v": PROTOCOL_VERSION, "type": "report", "worker_id": 1, "trial_id": "t", "attempt": 1, "epoch": 0, "value": 0.5
}
REGISTER = {"v": PROTOCOL_VERSION, "type": "register", "worker_id": 0, "pid": 4242, "host": "victim"}
_ENV = {"sid": "attacker-session", "seq": 1}


def _env(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``body`` with a well-formed envelope (so that each bad message below is bad for its
    stated reason only)."""
    return {**body, **_ENV, **changes}

#: name -> raw frames of a message the server must drop.
BAD_MESSAGES: dict[str, list[bytes]] = {
    "signed with another key": encode(GET, OTHER_KEY),
    "missing signature": [b"", _json(_env(GET))],
    "signature of another payload": [sign(KEY, _json(_env(REPORT))), _json(_env(GET))],
    "tampered payload": [encode(GET, KEY)[0], _json(_env(GET, worker_id=8))],
    "one frame only": [_json(_env(GET))],
    "three frames": [*encode(GET, KEY), b"extra"],
    "non-JSON payload": _signed(b"this is { not json"),
    "non-UTF-8 payload": _signed(b"\xff\xfe\x00garbage"),
    "JSON array": _signed(_json([_env(GET)])),
    "JSON string": _signed(_json("get")),
    "JSON number": _signed(b"42"),
    "wrong protocol version": _signed(_json(_env(GET, v=PROTOCOL_VERSION + 1))),
    "protocol version 1 (no replay envelope)": _signed(_json({**GET, "v": 1})),
    "missing version": _signed(_json({k: v for k, v in _env(GET).items() if k != "v"})),
    "unknown type": _signed(_json(_env(GET, type="shutdown"))),
    "type not a string": _signed(_json(_env(GET, type=["get"]))),
    "missing field": _signed(_json(_env({"v": PROTOCOL_VERSION, "type": "get"}))),
    "missing session id": _signed(_json({**GET, "seq": 1})),
    "missing sequence number": _signed(_json({**GET, "sid": "s"})),
    "empty session id": _signed(_json(_env(GET, sid=""))),
    "session id too long": _signed(_json(_env(GET, sid="s" * 65))),
    "sequence number 0": _signed(_json(_env(GET, seq=0))),
    "sequence number not an int": _signed(_json(_env(GET, seq="1"))),
    "ill-typed field (str for int)": _signed(_json(_env(GET, worker_id="7"))),
    "ill-typed field (bool for int)": _signed(_json(_env(GET, worker_id=True))),
    "ill-typed field (float for int)": _signed(_json(_env(REPORT, epoch=1.5))),
    "ill-typed field (str for number)": _signed(_json(_env(REPORT, value="0.5"))),
    "attempt 0": _signed(_json(_env(REPORT, attempt=0))),
    "unknown final status": _signed(
        _json(
            _env(
                {"v": PROTOCOL_VERSION, "type": "final", "worker_id": 1, "trial_id": "t", "attempt": 1},
                status="won", metric=None, error=None, error_type=None, fatal=False,
            )
        )
    ),
    "fatal flag not a bool": _signed(
        _json(
            _env(
                {"v": PROTOCOL_VERSION, "type": "final", "worker_id": 1, "trial_id": "t", "attempt": 1},
                status="failed", metric=None, error="E", error_type="E", fatal=1,
            )
        )
    ),
    "pickle protocol 0 (ASCII)": _signed(pickle.dumps(_env(GET), protocol=0)),
    "pickle protocol 5": _signed(pickle.dumps(_env(GET), protocol=5)),
}


# -- valid traffic ---------------------------------------------------------------------------


def test_request_reply_round_trip(carrier: Carrier) -> None:
    client = carrier.connect("worker-a")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.request, GET, 5.0)
        peer, msg = _recv_valid(carrier.server)
        assert peer == b"worker-a"
        assert msg == GET
        carrier.server.send(peer, {"type": "welcome", "worker_id": 7})
        reply = pending.result(timeout=5)
    assert reply == {"type": "welcome", "worker_id": 7, "v": PROTOCOL_VERSION}  # the envelope stays in the transport
    assert carrier.server.dropped == 0
    assert client.dropped == 0


def test_reply_reaches_the_right_one_of_two_clients(carrier: Carrier) -> None:
    clients = {1: carrier.connect("worker-1"), 2: carrier.connect("worker-2")}
    with ThreadPoolExecutor(2) as pool:
        pending = {
            wid: pool.submit(c.request, {"type": "get", "worker_id": wid}, 5.0) for wid, c in clients.items()
        }
        received = [_recv_valid(carrier.server), _recv_valid(carrier.server)]
        assert sorted(peer for peer, _ in received) == [b"worker-1", b"worker-2"]
        # Reply in the opposite order of arrival, each naming the asker: only identity routing
        # delivers each reply to its own client.
        for peer, msg in reversed(received):
            carrier.server.send(peer, {"type": "welcome", "worker_id": msg["worker_id"]})
        replies = {wid: fut.result(timeout=5) for wid, fut in pending.items()}
    assert replies[1]["worker_id"] == 1
    assert replies[2]["worker_id"] == 2


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
def test_invalid_message_is_dropped_counted_and_harmless(carrier: Carrier, name: str) -> None:
    carrier.raw_send(BAD_MESSAGES[name])
    valid = {**GET, "worker_id": 99}
    carrier.raw_send(encode(valid, KEY))
    peer, msg = _recv_valid(carrier.server)
    assert (peer, msg) == (b"attacker", valid)  # the next valid message, never the bad one
    assert carrier.server.dropped == 1, carrier.server.last_drop_reason
    assert carrier.server.last_drop_reason
    assert carrier.server.recv(timeout=0.05) is None  # nothing else is pending


def test_every_invalid_message_in_a_row_is_dropped_then_a_valid_one_arrives(carrier: Carrier) -> None:
    for frames in BAD_MESSAGES.values():
        carrier.raw_send(frames)
    valid = {**GET, "worker_id": 123}
    carrier.raw_send(encode(valid, KEY))
    assert _recv_valid(carrier.server) == (b"attacker", valid)
    assert carrier.server.dropped == len(BAD_MESSAGES)


def test_oversized_signed_message_is_dropped(carrier: Carrier) -> None:
    # A correctly signed, otherwise valid heartbeat of 1.5 MiB: over MAX_MESSAGE_BYTES, below zmq's
    # hard cap, so it reaches our check (and must not reach the caller).
    big = _env(GET, type="heartbeat", trial_id="x" * (3 * MAX_MESSAGE_BYTES // 2), attempt=None)
    payload = _json(big)
    assert len(payload) > MAX_MESSAGE_BYTES
    carrier.raw_send(_signed(payload))
    valid = {**GET, "worker_id": 5}
    carrier.raw_send(encode(valid, KEY))
    assert _recv_valid(carrier.server) == (b"attacker", valid)
    assert carrier.server.dropped == 1
    assert "oversized" in (carrier.server.last_drop_reason or "")


def test_signed_pickle_is_never_unpickled(carrier: Carrier, tmp_path: Any) -> None:
    target = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.makedirs, (str(target),))

    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        carrier.raw_send(_signed(pickle.dumps(Exploit(), protocol=protocol)))
    valid = {**GET, "worker_id": 3}
    carrier.raw_send(encode(valid, KEY))
    assert _recv_valid(carrier.server) == (b"attacker", valid)
    assert carrier.server.dropped == 3
    assert not target.exists()
    # The payload is live: unpickling it would have been detected.
    pickle.loads(pickle.dumps(Exploit(), protocol=0))
    assert target.exists()


def test_client_drops_a_forged_reply_and_takes_the_next_valid_one(carrier: Carrier) -> None:
    client = carrier.connect("worker-f")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.request, GET, 5.0, None, 0.05)
        peer, _ = _recv_valid(carrier.server)
        carrier.server._send_frames(peer, encode({"type": "done"}, OTHER_KEY))  # forged on the wire
        carrier.server.send(peer, {"type": "welcome", "worker_id": 7})
        assert pending.result(timeout=5)["type"] == "welcome"
    assert client.dropped == 1


def test_request_times_out_without_reply(carrier: Carrier) -> None:
    client = carrier.connect("worker-t")
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        client.request(GET, timeout=0.2, poll_interval=0.05)
    assert time.monotonic() - start < 2.0


# -- replays ----------------------------------------------------------------------------------


def _tap(client: Any) -> list[list[bytes]]:
    """Records the raw frames ``client`` puts on the wire (what an eavesdropper captures)."""
    captured: list[list[bytes]] = []
    send = client._send_frames

    def tapped(frames: list[bytes]) -> None:
        captured.append([bytes(f) for f in frames])
        send(frames)

    client._send_frames = tapped
    return captured


def test_a_captured_message_sent_again_is_dropped(carrier: Carrier) -> None:
    client = carrier.connect("worker-0")
    captured = _tap(client)
    client.send({"type": "register", "worker_id": 0, "pid": 4242, "host": "victim"})
    peer, msg = _recv_valid(carrier.server)
    assert peer == b"worker-0" and msg["type"] == "register"
    # The eavesdropper sends the validly signed register again, from its own socket...
    carrier.raw_send(captured[0])
    marker = {**GET, "worker_id": 77}
    carrier.raw_send(encode(marker, KEY))
    assert _recv_valid(carrier.server) == (b"attacker", marker)
    assert carrier.server.dropped == 1
    assert "replayed" in (carrier.server.last_drop_reason or "")
    # ... and the owner's next message is still accepted.
    client.send({"type": "heartbeat", "worker_id": 0, "trial_id": None, "attempt": None})
    assert _recv_valid(carrier.server)[1]["type"] == "heartbeat"
    assert carrier.server.dropped == 1


def test_every_captured_message_replayed_in_any_order_is_dropped(carrier: Carrier) -> None:
    client = carrier.connect("worker-r")
    captured = _tap(client)
    for n in range(5):
        client.send({"type": "heartbeat", "worker_id": 1, "trial_id": f"t{n}", "attempt": 1})
    assert [_recv_valid(carrier.server)[1]["trial_id"] for _ in range(5)] == [f"t{n}" for n in range(5)]
    for frames in reversed(captured):  # newest first, then older ones: all already seen
        carrier.raw_send(frames)
    carrier.raw_send(captured[-1])
    carrier.raw_send(encode({**GET, "worker_id": 5}, KEY))
    assert _recv_valid(carrier.server)[1]["worker_id"] == 5
    assert carrier.server.dropped == 6


def test_a_message_held_back_and_delivered_late_is_dropped(carrier: Carrier) -> None:
    session = Session("held-back")
    first = encode({**GET, "worker_id": 1}, KEY, session)  # seq 1, held back by the attacker
    second = encode({**GET, "worker_id": 2}, KEY, session)  # seq 2, delivered
    carrier.raw_send(second)
    assert _recv_valid(carrier.server)[1]["worker_id"] == 2
    carrier.raw_send(first)
    carrier.raw_send(encode({**GET, "worker_id": 3}, KEY))
    assert _recv_valid(carrier.server)[1]["worker_id"] == 3
    assert carrier.server.dropped == 1 and "out-of-order" in (carrier.server.last_drop_reason or "")


def test_sessions_are_independent(carrier: Carrier) -> None:
    a, b = Session("a"), Session("b")
    for frames in (encode(GET, KEY, a), encode(GET, KEY, b), encode(GET, KEY, b), encode(GET, KEY, a)):
        carrier.raw_send(frames)
    for _ in range(4):
        _recv_valid(carrier.server)
    assert carrier.server.dropped == 0


def test_client_drops_a_replayed_reply(carrier: Carrier) -> None:
    client = carrier.connect("worker-p")
    replies: list[list[bytes]] = []
    send = carrier.server._send_frames

    def tapped(peer: bytes, frames: list[bytes]) -> None:
        replies.append([bytes(f) for f in frames])
        send(peer, frames)

    carrier.server._send_frames = tapped
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.request, {**GET, "worker_id": 1}, 5.0, None, 0.05)
        peer, _ = _recv_valid(carrier.server)
        carrier.server.send(peer, {"type": "trial", "trial": {"trial_id": "t1"}})
        assert pending.result(timeout=5)["trial"]["trial_id"] == "t1"
        pending = pool.submit(client.request, {**GET, "worker_id": 1}, 5.0, None, 0.05)
        peer, _ = _recv_valid(carrier.server)
        send(peer, replies[0])  # the old assignment, replayed on the wire
        carrier.server.send(peer, {"type": "done"})
        assert pending.result(timeout=5) == {"type": "done", "v": PROTOCOL_VERSION}
    assert client.dropped == 1


def test_client_poll_returns_unsolicited_messages(carrier: Carrier) -> None:
    client = carrier.connect("worker-hb")
    client.send({"type": "heartbeat", "worker_id": 1, "trial_id": "t", "attempt": 2})
    peer, _ = _recv_valid(carrier.server)
    assert client.poll(0.0) is None
    carrier.server.send(peer, {"type": "drop", "trial_id": "t", "attempt": 2, "reason": "stale"})
    end = time.monotonic() + RECV_DEADLINE
    got = None
    while got is None and time.monotonic() < end:
        got = client.poll(0.05)
    assert got == {"type": "drop", "trial_id": "t", "attempt": 2, "reason": "stale", "v": PROTOCOL_VERSION}


# -- encode ----------------------------------------------------------------------------------


def test_encode_refuses_an_oversized_message() -> None:
    big = {"type": "heartbeat", "worker_id": 1, "trial_id": "x" * (MAX_MESSAGE_BYTES + 1)}
    with pytest.raises(ProtocolError, match="limit"):
        encode(big, KEY)


def test_encode_accepts_a_message_just_under_the_limit() -> None:
    session = Session("s" * 24)
    overhead = len(
        _json({"type": "heartbeat", "worker_id": 1, "trial_id": "", "attempt": None, "v": PROTOCOL_VERSION,
               "sid": session.sid, "seq": 1})
    )
    msg = {"type": "heartbeat", "worker_id": 1, "trial_id": "x" * (MAX_MESSAGE_BYTES - overhead), "attempt": None}
    frames = encode(msg, KEY, session)
    assert len(frames[1]) == MAX_MESSAGE_BYTES
    assert decode(frames, KEY)["trial_id"] == msg["trial_id"]


def test_encode_refuses_an_unknown_type() -> None:
    with pytest.raises(ProtocolError, match="unknown message type"):
        encode({"type": "shutdown", "worker_id": 1}, KEY)


def test_server_recv_returns_none_when_idle(carrier: Carrier) -> None:
    start = time.monotonic()
    assert carrier.server.recv(timeout=0.1) is None
    assert time.monotonic() - start < 2.0
    assert carrier.server.dropped == 0


def test_concurrent_senders_all_arrive(carrier: Carrier) -> None:
    clients = [carrier.connect(f"worker-{i}") for i in range(3)]
    barrier = threading.Barrier(len(clients))

    def send_some(i: int) -> None:
        barrier.wait()
        for n in range(10):
            clients[i].send({"type": "heartbeat", "worker_id": i, "trial_id": f"t{n}", "attempt": 1})

    threads = [threading.Thread(target=send_some, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    got: dict[bytes, list[str]] = {}
    for _ in range(30):
        peer, msg = _recv_valid(carrier.server)
        assert peer == f"worker-{msg['worker_id']}".encode()
        got.setdefault(peer, []).append(msg["trial_id"])
    for t in threads:
        t.join()
    # Per-sender order is kept.
    assert all(ids == [f"t{n}" for n in range(10)] for ids in got.values()) and len(got) == 3
