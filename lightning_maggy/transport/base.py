"""The transport interface: the server side the controller uses, the client side workers use.

Two implementations share it: :mod:`~lightning_maggy.transport.zmq_transport` (pyzmq ROUTER on
the driver, one DEALER per worker) and :mod:`~lightning_maggy.transport.inprocess` (queues, for
controller tests without sockets). Both carry the same signed frames from
:mod:`~lightning_maggy.transport.messages`, and both ends number what they send in a session of
their own and refuse replays (:class:`~lightning_maggy.transport.messages.ReplayGuard`), here in
the shared base classes, so the carriers only move frames.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from lightning_maggy.exceptions import ProtocolError
from lightning_maggy.transport.messages import ReplayGuard, Session, decode, encode

__all__ = ["ClientTransport", "ServerTransport"]


class ServerTransport(ABC):
    """Receives requests from workers and sends replies to them.

    Invalid and replayed messages never reach the caller: they are dropped and counted in
    :attr:`dropped`. Messages reach the caller without their envelope (``sid``, ``seq``).
    """

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.dropped = 0
        self.last_drop_reason: str | None = None
        self.session = Session()
        self._replay = ReplayGuard()

    @property
    @abstractmethod
    def address(self) -> str:
        """Where clients connect (e.g. ``tcp://127.0.0.1:50123``)."""

    @abstractmethod
    def _recv_frames(self, timeout: float) -> tuple[bytes, list[bytes]] | None:
        """One raw ``(peer, frames)`` or None after ``timeout`` seconds."""

    @abstractmethod
    def _send_frames(self, peer: bytes, frames: list[bytes]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def recv(self, timeout: float) -> tuple[bytes, dict[str, Any]] | None:
        """The next valid message as ``(peer, message)``, or None if none came in ``timeout`` s."""
        item = self._recv_frames(timeout)
        while item is not None:
            peer, frames = item
            try:
                return peer, _accept(frames, self.key, self._replay)
            except ProtocolError as err:
                self.dropped += 1
                self.last_drop_reason = str(err)
            item = self._recv_frames(0)
        return None

    def send(self, peer: bytes, message: Mapping[str, Any]) -> None:
        self._send_frames(peer, encode(message, self.key, self.session))


class ClientTransport(ABC):
    """One worker's connection: request/reply plus fire-and-forget messages.

    Forged and replayed replies are dropped and counted in :attr:`dropped`.
    """

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.dropped = 0
        self.session = Session()
        self._replay = ReplayGuard()

    @abstractmethod
    def _send_frames(self, frames: list[bytes]) -> None: ...

    @abstractmethod
    def _recv_frames(self, timeout: float) -> list[bytes] | None: ...

    @abstractmethod
    def close(self) -> None: ...

    def send(self, message: Mapping[str, Any]) -> None:
        """Sends without waiting for a reply (heartbeats)."""
        self._send_frames(encode(message, self.key, self.session))

    def poll(self, timeout: float = 0.0) -> dict[str, Any] | None:
        """The next valid message sent to this client, or None if none came in ``timeout`` s
        (for messages nobody asked for, such as a ``drop`` on the heartbeat socket)."""
        frames = self._recv_frames(timeout)
        while frames is not None:
            try:
                return _accept(frames, self.key, self._replay)
            except ProtocolError:
                self.dropped += 1
            frames = self._recv_frames(0)
        return None

    def request(
        self,
        message: Mapping[str, Any],
        timeout: float | None = None,
        still_wanted: Callable[[], bool] | None = None,
        poll_interval: float = 1.0,
    ) -> dict[str, Any]:
        """Sends ``message`` and waits for the reply.

        Args:
            timeout: give up after this many seconds (TimeoutError); None waits as long as
                ``still_wanted()`` returns True (checked every ``poll_interval`` seconds).
        """
        self.send(message)
        waited = 0.0
        while True:
            step = poll_interval if timeout is None else min(poll_interval, max(0.0, timeout - waited))
            frames = self._recv_frames(step)
            if frames is not None:
                try:
                    return _accept(frames, self.key, self._replay)
                except ProtocolError:
                    self.dropped += 1
                    continue
            waited += step
            if timeout is not None and waited >= timeout:
                raise TimeoutError(f"no reply to {message.get('type')!r} within {timeout} s")
            if still_wanted is not None and not still_wanted():
                raise ConnectionAbortedError("the driver went away while waiting for a reply")


def _accept(frames: list[bytes], key: bytes, guard: ReplayGuard) -> dict[str, Any]:
    """Verifies ``frames``, refuses a replay, and returns the message without its envelope."""
    body = decode(frames, key)
    guard.check(body)
    del body["sid"], body["seq"]
    return body
