"""What a study leaves behind: :class:`SearchResult`, and the files written from it
(``result.json``, ``trials.csv`` and the TensorBoard HParams summary)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from lightning_maggy.trial import Trial, TrialState, trial_value

__all__ = ["SearchResult", "fmt_config", "fmt_value", "write_result"]


@dataclasses.dataclass
class SearchResult:
    """The outcome of :func:`search`.

    Attributes:
        trials: every trial record, in the order they started.
        best_trial: the trial with the best metric under ``scope`` (None if none produced one).
        best_config / best_metric: shortcuts into ``best_trial`` (``best_metric`` is its value
            under ``scope``, the same figure the progress bar and :meth:`summary` show).
        scope: how a trial's metric is scored: "last" (default), its final metric, the value at
            the last epoch it trained (for a trial that ended at an ASHA rung, the rung's
            value); "all", the best value at any epoch it trained.
        exp_dir: the experiment directory (journal, result.json, trials.csv, per-trial folders),
            or its URL (``s3://...``) when the study kept it in cluster storage.
        local_dir: with an ``exp_dir`` URL, the driver's copy of the study (journal,
            ``result.json``, ``trials.csv``; the trial folders stay at the URL); else None.
        stop_reason: "finished", "timeout", "aborted", "interrupted" or "stalled" (the optimizer
            had nothing to propose while nothing ran that could change that; see ``message``).
        message: why the study was aborted or stalled, else None.
    """

    trials: list[Trial]
    metric: str
    direction: str
    exp_dir: str
    stop_reason: str
    best_trial: Trial | None = None
    message: str | None = None
    scope: str = "last"
    local_dir: str | None = None

    @classmethod
    def load(cls, exp_dir: str | os.PathLike[str], scope: str | None = None) -> SearchResult:
        """The result of the study in ``exp_dir`` (a folder, or a cluster-storage URL), read from
        its journal: also while the study runs (``stop_reason`` is then ``"running"``), and
        after its driver died.

        Args:
            scope: how trials are ranked ("last" or "all"); None: as the study's last result
                was, else "last".

        Raises:
            ConfigurationError: ``exp_dir`` holds no study journal (or its events yet).
            JournalError: a corrupt journal line other than the last.
        """
        from lightning_maggy.driver.journal import JOURNAL_NAME
        from lightning_maggy.exceptions import ConfigurationError
        from lightning_maggy.storage import fetch_study, is_remote
        from lightning_maggy.validation import check_scope

        if scope is not None:
            check_scope(scope)

        url = str(exp_dir) if is_remote(str(exp_dir)) else None
        folder = fetch_study(url, "exp_dir") if url is not None else Path(exp_dir)
        if not journal_has_events(folder):
            raise ConfigurationError(
                f"{url or folder} holds no study journal ({JOURNAL_NAME}) with events: pass the exp_dir of "
                "a study lightning_maggy started (the folder its search() or ablate() printed)."
            )
        return result_of_journal(folder, url=url, scope=scope)[0]

    @property
    def record_dir(self) -> Path:
        """The local folder that holds the study's journal and results: ``exp_dir``, or
        ``local_dir`` when ``exp_dir`` is a URL."""
        return Path(self.local_dir if self.local_dir is not None else self.exp_dir)

    @property
    def best_config(self) -> dict[str, Any] | None:
        return dict(self.best_trial.config) if self.best_trial else None

    @property
    def best_metric(self) -> float | None:
        return trial_value(self.best_trial, self.direction, self.scope) if self.best_trial else None

    @property
    def best_checkpoint(self) -> str | None:
        """The path of the best trial's checkpoint, ``exp_dir/trials/<id>/checkpoints/last.ckpt``:
        the weights after the last epoch the trial trained (under ASHA, the epoch it ended at:
        its rung, or the top one), whose metric is ``best_metric`` with ``scope="last"``. With
        ``scope="all"`` the trial's best epoch may be earlier than this checkpoint. None when the
        best trial left no checkpoint (function trials, a train function that writes none)."""
        if self.best_trial is None:
            return None
        if self.local_dir is not None:  # a URL: Lightning loads checkpoints from URLs itself
            from lightning_maggy.storage import open_url

            url = f"{self.exp_dir.rstrip('/')}/trials/{self.best_trial.trial_id}/checkpoints/last.ckpt"
            fs, path = open_url(url)
            return url if fs.isfile(path) else None
        path = Path(self.exp_dir) / "trials" / self.best_trial.trial_id / "checkpoints" / "last.ckpt"
        return str(path) if path.is_file() else None

    def load_best(self, module_cls: type, **kwargs: Any) -> Any:
        """The best trial's trained module, on the CPU: ``module_cls`` built as the search built
        the trial's module (the best configuration's hyperparameters its ``__init__`` accepts,
        or all of them as ``hparams=``, and the saved values of other arguments it names;
        ``kwargs`` add to them or replace them), then the
        checkpoint's weights loaded into it (``on_load_checkpoint``, then ``load_state_dict``,
        strict), as Lightning's ``load_from_checkpoint`` does. Unlike ``load_from_checkpoint``
        it does not pass the saved hyperparameters back to ``__init__``, so a subclass that
        fixes some of its base's arguments loads too.

        Example::

            model = result.load_best(MyModule)   # then model.eval(), trainer.test(model, ...)

        Raises:
            FileNotFoundError: the best trial left no checkpoint (see :attr:`best_checkpoint`).
        """
        path = self.best_checkpoint
        if path is None:
            raise FileNotFoundError(
                "the best trial left no checkpoint to load (a function trial, a train function "
                "that writes none, or no trial finished with a metric); load_best() needs a "
                "searched LightningModule class or a checkpoint in its trial folder."
            )
        import fsspec
        import torch

        from lightning_maggy.lightning.trainer import module_arguments

        with fsspec.open(path, "rb") as fh:  # a path, or a URL in cluster storage
            checkpoint = torch.load(fh, map_location="cpu", weights_only=False)
        saved = checkpoint.get("hyper_parameters") or {}
        model = module_cls(**{**module_arguments(module_cls, self.best_config or {}, saved), **kwargs})
        model.on_load_checkpoint(checkpoint)
        model.load_state_dict(checkpoint["state_dict"])
        return model

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in TrialState}
        for t in self.trials:
            out[t.state.value] += 1
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per trial (config keys prefixed with ``config/``)."""
        rows = []
        for t in self.trials:
            row: dict[str, Any] = {
                "trial_id": t.trial_id,
                "state": t.state.value,
                self.metric: t.final_metric,
                "epochs": t.epochs,
                "budget": t.budget,
                "retries": t.retries,
                "attempts": t.attempt,
                "duration_s": None if t.duration is None else round(t.duration, 3),
                "component": t.component,
                "seed": t.seed,
                "error": (t.error or "").strip().splitlines()[-1] if t.error else None,
            }
            row.update({f"config/{k}": v for k, v in t.config.items()})
            rows.append(row)
        return rows

    def to_pandas(self) -> Any:
        """The trials as a :class:`pandas.DataFrame` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("to_pandas() needs pandas: pip install pandas") from err
        rows = self.rows()
        if not rows:  # no trial yet: the table's columns all the same
            return pd.DataFrame(columns=["trial_id", "state", self.metric, "epochs", "budget", "retries",
                                         "attempts", "duration_s", "component", "seed", "error"])
        return pd.DataFrame(rows)

    def plot(self, path: str | os.PathLike[str] | None = None) -> dict[str, str]:
        """Writes the study's figures as PNG files and returns their paths (needs matplotlib:
        ``pip install 'lightning_maggy[plot]'``).

        - ``"history"``, ``history.png``: the best score so far against wall time since the
          study's start and against epochs trained (all trials together), one point per scored
          trial when its final score was recorded (timed by the journal's reports when
          ``exp_dir`` has the journal); under ``scope``, so it ends at ``best_metric``.
        - ``"curves"``, ``curves.png``: every trial's ``history`` per epoch, coloured by its
          final state, the best trial in black; ASHA, Hyperband and BOHB rungs as dashed lines
          (from the settings in ``experiment.json``, else the distinct trial budgets).
        - ``"importance"``, ``importance.png``: hyperparameter importance, sorted (see
          :func:`lightning_maggy.importance.importance`; with rungs, the scores at the bottom
          rung, which every trial trained). Left out, with a warning, below 5 scored trials.

        Args:
            path: the directory to write into (created if missing); default ``exp_dir`` (the
                driver's copy, ``local_dir``, when ``exp_dir`` is a URL).

        Raises:
            ImportError: matplotlib is not installed.
        """
        from lightning_maggy.plots import plot_result

        return plot_result(self, path)

    def summary(self, top: int | None = 10, unranked: bool = False) -> str:
        """A table of the best ``top`` trials (every ranked one with None), as text.

        Args:
            top: how many of the ranked trials to list, best first.
            unranked: also list, after them, the trials without a score (running or pending
                ones with no final metric yet, failed ones): their latest reported value in
                parentheses, or ``-``.
        """
        values = {t.trial_id: trial_value(t, self.direction, self.scope) for t in self.trials}
        scored = [t for t in self.trials if values[t.trial_id] is not None]
        scored.sort(key=lambda t: values[t.trial_id], reverse=self.direction == "max")  # type: ignore[arg-type,return-value]
        rows = scored[:top] + ([t for t in self.trials if values[t.trial_id] is None] if unranked else [])
        counts = ", ".join(f"{v} {k.lower()}" for k, v in self.counts().items() if v)
        lines = [f"{len(self.trials)} trials{f' ({counts})' if counts else ''}; stop reason: {self.stop_reason}; "
                 f"exp_dir: {self.exp_dir}"]
        if self.message:
            lines.append(self.message.strip().splitlines()[0])
        if rows:
            label = self.metric if self.scope == "last" else f"{self.metric} (best epoch)"
            width = max(12, len(label))  # a long metric name (or "(best epoch)") widens its column
            lines.append(f"{'trial':<18}{'state':<11}{'epochs':>6}  {label:>{width}}  config")
            for t in rows:
                value = values[t.trial_id]
                latest = next((v for v in reversed(t.history) if math.isfinite(v)), None)
                shown = f"{value:.5g}" if value is not None else "-" if latest is None else f"({latest:.5g})"
                what = fmt_config(t.config)
                if t.component is not None or t.seed is not None:  # an ablation's run: which one
                    what = f"{'base' if t.component is None else 'without ' + t.component}, seed {t.seed}; {what}"
                row = f"{t.trial_id:<18}{t.state.value:<11}{t.epochs:>6}  {shown:>{width}}  {what}"
                lines.append(row)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"SearchResult(trials={len(self.trials)}, best_metric={self.best_metric!r}, "
            f"best_config={self.best_config!r}, stop_reason={self.stop_reason!r}, exp_dir={self.exp_dir!r})"
        )


def fmt_value(v: Any) -> str:
    """A short text form of a hyperparameter value."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def fmt_config(config: Any) -> str:
    """A short text form of a configuration: ``lr=0.01, hidden=32``."""
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in config.items())


def journal_has_events(folder: Path) -> bool:
    """Whether ``folder`` holds a study journal with at least one event written (a study that
    is only starting has none yet)."""
    from lightning_maggy.driver.journal import JOURNAL_NAME

    journal = folder / JOURNAL_NAME
    return journal.is_file() and journal.stat().st_size > 0


def result_of_journal(folder: Path, url: str | None = None, scope: str | None = None) -> tuple[SearchResult, Any]:
    """The :class:`SearchResult` the journal in ``folder`` records, and the journal's
    :class:`~lightning_maggy.driver.journal.StudyLog` (``url``: the study's URL, of which
    ``folder`` is the driver's copy; ``scope``: see :meth:`SearchResult.load`)."""
    from lightning_maggy.driver.journal import JOURNAL_NAME, load_study
    from lightning_maggy.trial import best_trial

    log = load_study(folder / JOURNAL_NAME)
    info = log.experiment or {}
    direction = str(info.get("direction", "max"))
    scope = scope or _recorded_scope(folder) or "last"
    trials = list(log.trials.values())
    result = SearchResult(
        trials=trials, metric=str(info.get("metric", "metric")), direction=direction,
        exp_dir=url or str(folder), local_dir=str(folder) if url is not None else None,
        stop_reason=log.end_reason or "running", best_trial=best_trial(trials, direction, scope),
        message=log.end_message, scope=scope,
    )
    return result, log


def _recorded_scope(exp: Path) -> str | None:
    """The scope of the study's last result (result.json), if it has one."""
    try:
        scope = json.loads((exp / "result.json").read_text(encoding="utf-8")).get("scope")
    except (OSError, ValueError, AttributeError):
        return None
    return scope if scope in ("last", "all") else None


def write_result(result: SearchResult) -> None:
    """Writes result.json, trials.csv and the TensorBoard HParams summary into the study's
    local folder (:attr:`SearchResult.record_dir`)."""
    exp = result.record_dir
    payload = {
        "metric": result.metric,
        "direction": result.direction,
        "stop_reason": result.stop_reason,
        "message": result.message,
        "best_trial_id": result.best_trial.trial_id if result.best_trial else None,
        "best_config": result.best_config,
        "best_metric": result.best_metric,
        "scope": result.scope,
        "counts": result.counts(),
        "trials": [t.to_dict() for t in result.trials],
    }
    _replace_file(exp / "result.json", json.dumps(payload, indent=2, default=str))
    rows = result.rows()
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=fields or ["trial_id"])
    writer.writeheader()
    writer.writerows(rows)
    _replace_file(exp / "trials.csv", table.getvalue())
    _write_tensorboard(result, exp / "tensorboard")


def _replace_file(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file moved over it: a write that fails
    (a full disk) leaves the earlier file whole, and no temporary file behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _write_tensorboard(result: SearchResult, logdir: Path) -> None:
    """One HParams run per trial with a metric, for ``tensorboard --logdir exp_dir/tensorboard``.

    Written with the ``tensorboard`` package's protocol buffers and event writer alone, not
    ``torch.utils.tensorboard``: a search of plain functions has not imported torch in the
    driver, and importing it just for this summary cost seconds at the end of every search (and
    after every Ctrl-C)."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:  # tensorboard is a core dependency; stay quiet if it was removed
        return
    for t in result.trials:
        if t.final_metric is None:
            continue
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in t.config.items()}
        if t.component is not None or t.seed is not None:  # an ablation trial
            hparams.update(component=t.component or "base", seed=int(t.seed or 0))
        metrics = {f"hparam/{result.metric}": float(t.final_metric), "hparam/epochs": float(t.epochs)}
        writer = EventFileWriter(str(logdir / t.trial_id))
        try:
            now = time.time()
            for summary in _hparams_summaries(hparams, metrics):
                writer.add_event(Event(summary=summary, wall_time=now, step=0))
        finally:
            writer.close()


def _hparams_summaries(hparams: dict[str, Any], metrics: dict[str, float]) -> list[Any]:
    """The summaries of TensorBoard's HParams plugin for one run (experiment, session start and
    end), then one scalar per metric: what ``SummaryWriter.add_hparams`` writes."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.api_pb2 import DataType, Experiment, HParamInfo, MetricInfo, MetricName, Status
    from tensorboard.plugins.hparams.metadata import (
        EXPERIMENT_TAG,
        PLUGIN_DATA_VERSION,
        PLUGIN_NAME,
        SESSION_END_INFO_TAG,
        SESSION_START_INFO_TAG,
    )
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo

    def plugin_summary(tag: str, content: Any) -> Any:
        metadata = SummaryMetadata(
            plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content.SerializeToString())
        )
        return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])

    infos = []
    start = SessionStartInfo()
    for name, value in hparams.items():
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
            infos.append(HParamInfo(name=name, type=DataType.Value("DATA_TYPE_BOOL")))
        elif isinstance(value, (int, float)):
            start.hparams[name].number_value = value
            infos.append(HParamInfo(name=name, type=DataType.Value("DATA_TYPE_FLOAT64")))
        else:
            start.hparams[name].string_value = str(value)
            infos.append(HParamInfo(name=name, type=DataType.Value("DATA_TYPE_STRING")))
    experiment = Experiment(hparam_infos=infos, metric_infos=[MetricInfo(name=MetricName(tag=m)) for m in metrics])
    end = SessionEndInfo(status=Status.Value("STATUS_SUCCESS"))
    return [
        plugin_summary(EXPERIMENT_TAG, HParamsPluginData(experiment=experiment, version=PLUGIN_DATA_VERSION)),
        plugin_summary(SESSION_START_INFO_TAG, HParamsPluginData(session_start_info=start, version=PLUGIN_DATA_VERSION)),
        plugin_summary(SESSION_END_INFO_TAG, HParamsPluginData(session_end_info=end, version=PLUGIN_DATA_VERSION)),
        *(Summary(value=[Summary.Value(tag=m, simple_value=v)]) for m, v in metrics.items()),
    ]
