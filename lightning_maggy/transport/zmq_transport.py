"""pyzmq transport: a ROUTER socket on the driver, one DEALER socket per worker."""

from __future__ import annotations

import os
import tempfile
import uuid

import zmq

from lightning_maggy.transport.base import ClientTransport, ServerTransport
from lightning_maggy.transport.messages import MAX_MESSAGE_BYTES

__all__ = ["ZmqClient", "ZmqServer"]

_SNDMORE = int(zmq.SNDMORE)


class ZmqServer(ServerTransport):
    """Binds a ROUTER socket to ``host`` on a free port, or with ``host="ipc"`` to a Unix socket
    in the temp directory (workers on the same machine: a little faster than loopback TCP)."""

    def __init__(self, key: bytes, host: str = "127.0.0.1", port: int | None = None) -> None:
        super().__init__(key)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        # A memory guard: zmq drops far-oversized messages (and that peer) before we read them;
        # those between MAX_MESSAGE_BYTES and this cap are read, dropped and counted by us.
        self._sock.setsockopt(zmq.MAXMSGSIZE, 16 * MAX_MESSAGE_BYTES)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self._ipc_path: str | None = None
        try:
            self._bind(host, port)
        except BaseException:
            # Closed now: left to the garbage collector, the context and its socket can be
            # collected in one cycle, the socket's weak reference cleared first, and the
            # context's __del__ then blocks in term() for ever (it hung a later test's process).
            self.close()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)

    def _bind(self, host: str, port: int | None) -> None:
        if host == "ipc":
            self._ipc_path = os.path.join(tempfile.gettempdir(), f"lightning_maggy-{uuid.uuid4().hex[:16]}.sock")
            self._address = f"ipc://{self._ipc_path}"
            self._sock.bind(self._address)
        else:
            bind_host = "*" if host in ("0.0.0.0", "*") else host
            if port is None:
                port = self._sock.bind_to_random_port(f"tcp://{bind_host}")
            else:
                self._sock.bind(f"tcp://{bind_host}:{port}")
            self._address = f"tcp://{host}:{port}"

    @property
    def address(self) -> str:
        return self._address

    def _recv_frames(self, timeout: float) -> tuple[bytes, list[bytes]] | None:
        try:  # under load a message is usually waiting: skip the poll
            frames = self._sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            if not self._sock.poll(int(timeout * 1000), zmq.POLLIN):
                return None
            frames = self._sock.recv_multipart()
        return frames[0], frames[1:]

    def _send_frames(self, peer: bytes, frames: list[bytes]) -> None:
        # send_multipart without its per-frame checks and flag enums: this is every answer's path
        send = self._sock.send
        send(peer, _SNDMORE)
        for frame in frames[:-1]:
            send(frame, _SNDMORE)
        send(frames[-1])

    def close(self) -> None:
        self._sock.close(0)
        self._ctx.term()
        if self._ipc_path is not None and os.path.exists(self._ipc_path):
            os.unlink(self._ipc_path)


class ZmqClient(ClientTransport):
    """Connects a DEALER socket to the server's address."""

    def __init__(self, address: str, key: bytes, identity: str | None = None) -> None:
        super().__init__(key)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 1000)
        self._sock.setsockopt(zmq.IDENTITY, (identity or uuid.uuid4().hex).encode())
        try:
            self._sock.connect(address)
        except BaseException:  # closed now, not by a garbage collection that can block (see ZmqServer)
            self.close()
            raise

    def _send_frames(self, frames: list[bytes]) -> None:
        self._sock.send_multipart(frames)

    def _recv_frames(self, timeout: float) -> list[bytes] | None:
        if not self._sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        return self._sock.recv_multipart()

    def close(self) -> None:
        self._sock.close()
        self._ctx.term()
