"""The wire protocol: versioned JSON messages signed with HMAC-SHA256.

A message is a JSON object with a protocol version ``v``, a ``type`` and type-specific fields.
On the wire it is two frames: the hex HMAC-SHA256 of the payload under the experiment's secret,
then the UTF-8 JSON payload (the Jupyter wire-protocol approach). Nothing received is ever
unpickled. :func:`decode` rejects -- with :class:`~lightning_maggy.exceptions.ProtocolError` --
unsigned, wrongly signed, oversized, non-JSON, wrong-version, unknown-type and ill-typed messages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_maggy.exceptions import ProtocolError

__all__ = ["MAX_MESSAGE_BYTES", "PROTOCOL_VERSION", "SCHEMAS", "decode", "encode", "sign"]

PROTOCOL_VERSION = 1
#: Messages larger than this are dropped unread (a FINAL with a long traceback is well below).
MAX_MESSAGE_BYTES = 1 << 20

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))

#: type -> required field -> accepted Python types after json.loads.
SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    # worker -> server
    "register": {"worker_id": (int,), "pid": (int,), "host": (str,)},
    "get": {"worker_id": (int,)},
    "report": {"worker_id": (int,), "trial_id": (str,), "epoch": (int,), "value": _NUM},
    "final": {
        "worker_id": (int,),
        "trial_id": (str,),
        "status": (str,),
        "metric": _OPT_NUM,
        "error": _OPT_STR,
        "error_type": _OPT_STR,
    },
    "heartbeat": {"worker_id": (int,), "trial_id": _OPT_STR},
    # server -> worker
    "welcome": {"worker_id": (int,)},
    "trial": {"trial": (dict,)},
    "decision": {"decision": (str,)},
    "done": {},
}


#: type -> optional field -> accepted types, checked when present.
OPTIONAL: dict[str, dict[str, tuple[type, ...]]] = {
    # False: a report the worker does not wait for (the server sends no answer).
    "report": {"sync": (bool,)},
}


def sign(key: bytes, payload: bytes) -> bytes:
    """The hex HMAC-SHA256 of ``payload`` under ``key``."""
    return hmac.digest(key, payload, hashlib.sha256).hex().encode()


def encode(message: Mapping[str, Any], key: bytes) -> list[bytes]:
    """Serializes and signs a message into ``[signature, payload]`` frames."""
    body = dict(message)
    body.setdefault("v", PROTOCOL_VERSION)
    if body.get("type") not in SCHEMAS:
        raise ProtocolError(f"unknown message type {body.get('type')!r}")
    payload = json.dumps(body, separators=(",", ":"), allow_nan=True).encode()
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            f"message of type {body.get('type')!r} is {len(payload)} bytes, over the "
            f"{MAX_MESSAGE_BYTES}-byte limit"
        )
    return [sign(key, payload), payload]


def decode(frames: Sequence[bytes], key: bytes) -> dict[str, Any]:
    """Verifies and parses ``[signature, payload]`` frames; raises ProtocolError if invalid."""
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


def _check_fields(body: Mapping[str, Any]) -> None:
    if body.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {body.get('v')!r}; expected {PROTOCOL_VERSION}")
    kind = body.get("type")
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    for field, types in schema.items():
        if field not in body:
            raise ProtocolError(f"{kind} message lacks field {field!r}")
        value = body[field]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ProtocolError(
                f"{kind}.{field} must be {'/'.join(t.__name__ for t in types)}, got {type(value).__name__}"
            )
    for field, types in OPTIONAL.get(kind, {}).items():
        if field in body and not isinstance(body[field], types):
            raise ProtocolError(f"{kind}.{field} must be {'/'.join(t.__name__ for t in types)}")
