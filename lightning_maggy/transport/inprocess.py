"""An in-process transport with the same interface as the zmq one, for tests without sockets.

Frames travel through queues but are signed and verified exactly as on the network.
"""

from __future__ import annotations

import queue
import threading
import uuid

from lightning_maggy.transport.base import ClientTransport, ServerTransport

__all__ = ["InProcessClient", "InProcessServer"]


class InProcessServer(ServerTransport):
    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        self._inbox: queue.Queue[tuple[bytes, list[bytes]]] = queue.Queue()
        self._outboxes: dict[bytes, queue.Queue[list[bytes]]] = {}
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"inprocess://{id(self)}"

    def _outbox(self, peer: bytes) -> queue.Queue[list[bytes]]:
        with self._lock:
            return self._outboxes.setdefault(peer, queue.Queue())

    def _recv_frames(self, timeout: float) -> tuple[bytes, list[bytes]] | None:
        try:
            return self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _send_frames(self, peer: bytes, frames: list[bytes]) -> None:
        self._outbox(peer).put(list(frames))

    def inject(self, peer: bytes, frames: list[bytes]) -> None:
        """Delivers raw frames as if a peer had sent them (tests of malformed input)."""
        self._inbox.put((peer, list(frames)))

    def connect(self, identity: str | None = None) -> InProcessClient:
        return InProcessClient(self, identity)

    def close(self) -> None:
        pass


class InProcessClient(ClientTransport):
    def __init__(self, server: InProcessServer, identity: str | None = None) -> None:
        super().__init__(server.key)
        self._server = server
        self.identity = (identity or uuid.uuid4().hex).encode()

    def _send_frames(self, frames: list[bytes]) -> None:
        self._server.inject(self.identity, frames)

    def _recv_frames(self, timeout: float) -> list[bytes] | None:
        box = self._server._outbox(self.identity)
        try:
            return box.get(timeout=timeout) if timeout > 0 else box.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        pass
