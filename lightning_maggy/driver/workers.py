"""What the controller keeps per worker, the reasons a study ends, and the type of its replies."""

from __future__ import annotations

import dataclasses
from typing import Any

from lightning_maggy.trial import Trial

__all__ = ["Outgoing", "StopReason"]

#: The messages a controller returns: (peer, message) pairs to send.
Outgoing = list[tuple[bytes, dict[str, Any]]]


class StopReason:
    FINISHED = "finished"
    TIMEOUT = "timeout"
    ABORTED = "aborted"
    INTERRUPTED = "interrupted"
    #: the optimizer had nothing to propose while nothing ran that could change its answer
    STALLED = "stalled"


@dataclasses.dataclass
class _Worker:
    worker_id: int
    peer: bytes
    last_seen: float
    trial_id: str | None = None
    attempt: int | None = None  # of trial_id
    trial_started: float | None = None  # clock() when the attempt was handed out
    #: the assignment last taken away from this worker (lost, over its time, aborted): the one
    #: stale FINAL it may still send, and is answered with new work
    stale: tuple[str, int] | None = None
    hb_peer: bytes | None = None  # its heartbeat socket: where unsolicited drops go
    #: declared lost for its silence and not heard from since (see driver.ticking)
    silent: bool = False
    last_finished: Trial | None = None
    #: the ids of the controller's parked workers, kept by ``parked`` (so that waking them
    #: looks at the parked workers only, not at every connected one)
    parked_ids: set[int] = dataclasses.field(default_factory=set, repr=False)

    @property
    def parked(self) -> bool:
        """Waiting for work (asked, and got none yet)."""
        return self.worker_id in self.parked_ids

    @parked.setter
    def parked(self, value: bool) -> None:
        if value:
            self.parked_ids.add(self.worker_id)
        else:
            self.parked_ids.discard(self.worker_id)
