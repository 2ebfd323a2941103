"""Transports between the driver's server and the workers (one wire protocol, two carriers)."""

from __future__ import annotations

from lightning_maggy.transport.base import ClientTransport, ServerTransport
from lightning_maggy.transport.inprocess import InProcessClient, InProcessServer
from lightning_maggy.transport.messages import PROTOCOL_VERSION, decode, encode

__all__ = [
    "PROTOCOL_VERSION",
    "ClientTransport",
    "InProcessClient",
    "InProcessServer",
    "ServerTransport",
    "decode",
    "encode",
]
