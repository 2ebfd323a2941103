"""One exception tree for lightning_maggy.

Every error this package raises on purpose derives from :class:`MaggyError`, so callers can
catch the whole family with one ``except``. Errors about bad arguments also derive from
:class:`ValueError` / :class:`TypeError`, so code written against the standard library's
conventions keeps working.
"""

from __future__ import annotations


class MaggyError(Exception):
    """Base class of every error raised by lightning_maggy."""


class SearchspaceError(MaggyError, ValueError):
    """A search space or hyperparameter declaration is invalid."""


class ConfigurationError(MaggyError, ValueError):
    """An argument of ``search()`` or of a component is invalid; raised before any worker starts."""


class MetricNotFoundError(MaggyError, KeyError):
    """The metric a search optimizes was not logged by the LightningModule."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class EarlyStopException(MaggyError):
    """Raised inside a function trial by ``reporter.broadcast`` when the server stops the trial.

    The original Maggy contract: let it propagate (lightning_maggy catches it and records the
    trial as STOPPED with the metric of the last report).
    """

    def __init__(self, metric: float | None = None, message: str = "trial stopped early") -> None:
        super().__init__(message)
        self.metric = metric


class TrialDropped(MaggyError):
    """Raised in a worker when the server says its attempt at a trial is stale (the trial was
    re-queued elsewhere after this worker was wrongly declared lost, ran over ``trial_timeout``,
    or the study ended): the worker stops training that attempt at once and writes nothing more
    for it. Let it propagate; lightning_maggy catches it."""


class ProtocolError(MaggyError):
    """A message on the wire was unsigned, malformed, oversized or of an unknown version."""


class BackendError(MaggyError):
    """Workers could not be started, or were lost beyond recovery."""


class ExperimentError(MaggyError):
    """The experiment as a whole failed (for example too many failed trials)."""


class JournalError(MaggyError, ValueError):
    """An experiment's ``journal.jsonl`` cannot be read back: a line other than the last one is
    corrupt (only the last line may be torn by a crash in the middle of a write)."""


class AblationError(MaggyError):
    """One ablation trial cannot run with its component left out (for example a removed layer
    changes a shape the next layer needs). That trial fails before training; the study goes on."""
