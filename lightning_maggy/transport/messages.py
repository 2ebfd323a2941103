"""The wire protocol: versioned JSON messages signed with HMAC-SHA256, with replay protection.

A message is a JSON object with a protocol version ``v``, a ``type``, an envelope -- the
sender's session id ``sid`` and its sequence number ``seq`` in that session -- and
type-specific fields. On the wire it is two frames: the hex HMAC-SHA256 of the payload under
the experiment's secret, then the UTF-8 JSON payload (the Jupyter wire-protocol approach).
Nothing received is ever unpickled. :func:`decode` rejects -- with
:class:`~lightning_maggy.exceptions.ProtocolError` -- unsigned, wrongly signed, oversized,
non-JSON, wrong-version, unknown-type and ill-typed messages.

Replays: the signature covers ``sid`` and ``seq``, and every sender numbers its messages
1, 2, 3, ... within a session of its own (:class:`Session`, a random id per connection). A
receiver's :class:`ReplayGuard` remembers, per session, the highest ``seq`` it accepted and
drops any signed message whose ``seq`` is not higher: a captured message sent again (from any
socket) is refused, as Jupyter's ``Session`` refuses a signature already in its digest history.
A sequence number per session needs one integer per session where a digest history needs one
digest per message, and it also refuses a message held back and delivered out of order.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import itertools
import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_maggy.exceptions import ProtocolError

__all__ = [
    "ENVELOPE",
    "FINAL_STATUSES",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "SCHEMAS",
    "ReplayGuard",
    "Session",
    "decode",
    "encode",
    "sign",
]

#: 2: the ``sid``/``seq`` envelope, trial attempts, the ``fatal`` flag and ``drop`` messages.
PROTOCOL_VERSION = 2
#: Messages larger than this are dropped unread (a FINAL with a long traceback is well below).
MAX_MESSAGE_BYTES = 1 << 20
#: Longest accepted session id.
MAX_SID_CHARS = 64

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))

#: The statuses a worker may give a trial in its FINAL: "dropped" means the server told the
#: worker that its attempt is stale (see :mod:`lightning_maggy.driver.controller`).
FINAL_STATUSES = frozenset({"ok", "stopped", "paused", "failed", "dropped"})

#: Fields every message carries, checked before the type-specific ones.
ENVELOPE: dict[str, tuple[type, ...]] = {"sid": (str,), "seq": (int,)}

#: type -> required field -> accepted Python types after json.loads.
SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    # worker -> server
    "register": {"worker_id": (int,), "pid": (int,), "host": (str,)},
    "get": {"worker_id": (int,)},
    "report": {"worker_id": (int,), "trial_id": (str,), "attempt": (int,), "epoch": (int,), "value": _NUM},
    "final": {
        "worker_id": (int,),
        "trial_id": (str,),
        "attempt": (int,),
        "status": (str,),
        "metric": _OPT_NUM,
        "error": _OPT_STR,
        "error_type": _OPT_STR,
        # True when the worker found the error to be one of lightning_maggy's own
        # misconfiguration errors (isinstance, never a class name): every trial would hit it.
        "fatal": (bool,),
    },
    "heartbeat": {"worker_id": (int,), "trial_id": _OPT_STR, "attempt": _OPT_INT},
    # server -> worker
    "welcome": {"worker_id": (int,)},
    "trial": {"trial": (dict,)},
    "decision": {"decision": (str,)},
    # The worker's attempt at a trial is stale (re-queued elsewhere, stopped, or over its
    # time): stop training it at once and write nothing more for it.
    "drop": {"trial_id": (str,), "attempt": (int,), "reason": (str,)},
    "done": {},
}


#: type -> optional field -> accepted types, checked when present.
OPTIONAL: dict[str, dict[str, tuple[type, ...]]] = {
    # False: a report the worker does not wait for (the server sends no answer).
    "report": {"sync": (bool,)},
    # True: the trial failed because its storage did (a full disk, a store that stopped
    # answering; lightning.disk): the study stops.
    "final": {"storage_failed": (bool,)},
}


class Session:
    """One sender's numbering: a random session id and a thread-safe counter from 1."""

    def __init__(self, sid: str | None = None) -> None:
        self.sid = sid if sid is not None else os.urandom(12).hex()
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        with self._lock:
            return next(self._counter)


class ReplayGuard:
    """Remembers the highest sequence number accepted from each session.

    Only messages whose signature was verified reach it, so only holders of the experiment's
    secret can add sessions; ``max_sessions`` bounds the memory anyway (the least recently
    heard session is forgotten first; a search uses two sessions per worker start).
    """

    def __init__(self, max_sessions: int = 1 << 16) -> None:
        self.max_sessions = max_sessions
        self._last: collections.OrderedDict[str, int] = collections.OrderedDict()

    def check(self, body: Mapping[str, Any]) -> None:
        """Accepts ``body`` (records its seq) or raises ProtocolError for a replay."""
        sid, seq = body["sid"], body["seq"]
        last = self._last.get(sid)
        if last is not None and seq <= last:
            raise ProtocolError(
                f"replayed or out-of-order message: session {sid[:16]} seq {seq} <= {last} already accepted"
            )
        self._last[sid] = seq
        self._last.move_to_end(sid)
        while len(self._last) > self.max_sessions:
            self._last.popitem(last=False)


#: One encoder for every message (``json.dumps`` with options builds a new one per call).
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=True).encode


def sign(key: bytes, payload: bytes) -> bytes:
    """The hex HMAC-SHA256 of ``payload`` under ``key``."""
    return hmac.digest(key, payload, hashlib.sha256).hex().encode()


def encode(message: Mapping[str, Any], key: bytes, session: Session | None = None) -> list[bytes]:
    """Serializes and signs a message into ``[signature, payload]`` frames.

    Args:
        message: the message (``type`` and its fields; ``v`` is added).
        key: the experiment's secret.
        session: numbers the message (``sid``, ``seq``); None: a one-message session of its own.
    """
    body = dict(message)
    body.setdefault("v", PROTOCOL_VERSION)
    if body.get("type") not in SCHEMAS:
        raise ProtocolError(f"unknown message type {body.get('type')!r}")
    session = session or Session()
    body["sid"] = session.sid
    body["seq"] = session.next_seq()
    payload = _ENCODE(body).encode()
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            f"message of type {body.get('type')!r} is {len(payload)} bytes, over the "
            f"{MAX_MESSAGE_BYTES}-byte limit"
        )
    return [sign(key, payload), payload]


def decode(frames: Sequence[bytes], key: bytes) -> dict[str, Any]:
    """Verifies and parses ``[signature, payload]`` frames; raises ProtocolError if invalid.

    The result still holds the envelope (``sid``, ``seq``); replays are the receiver's
    :class:`ReplayGuard`'s to refuse.
    """
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames (signature, payload), got {len(frames)}")
    signature, payload = bytes(frames[0]), bytes(frames[1])
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"oversized message: {len(payload)} bytes > {MAX_MESSAGE_BYTES}")
    if not signature or not hmac.compare_digest(signature, sign(key, payload)):
        raise ProtocolError("bad or missing signature")
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ProtocolError(f"payload is not JSON: {err}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"payload must be a JSON object, got {type(body).__name__}")
    _check_fields(body)
    return body


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # a JSON true/false is never an int here
        return bool in types
    return isinstance(value, types)


def _check_fields(body: Mapping[str, Any]) -> None:
    if body.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {body.get('v')!r}; expected {PROTOCOL_VERSION}")
    kind = body.get("type")
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    for field, types in (*ENVELOPE.items(), *schema.items()):
        if field not in body:
            raise ProtocolError(f"{kind} message lacks field {field!r}")
        if not _type_ok(body[field], types):
            raise ProtocolError(
                f"{kind}.{field} must be {'/'.join(t.__name__ for t in types)}, got {type(body[field]).__name__}"
            )
    for field, types in OPTIONAL.get(kind, {}).items():
        if field in body and not _type_ok(body[field], types):
            raise ProtocolError(f"{kind}.{field} must be {'/'.join(t.__name__ for t in types)}")
    if not 0 < len(body["sid"]) <= MAX_SID_CHARS or body["seq"] < 1:
        raise ProtocolError(f"{kind}: bad envelope (sid of 1-{MAX_SID_CHARS} chars, seq >= 1 expected)")
    if "attempt" in schema and body["attempt"] is not None and body["attempt"] < 1:
        raise ProtocolError(f"{kind}.attempt must be >= 1, got {body['attempt']}")
    if kind == "final" and body["status"] not in FINAL_STATUSES:
        raise ProtocolError(f"final.status must be one of {sorted(FINAL_STATUSES)}, got {body['status']!r}")
