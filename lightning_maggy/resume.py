"""Resuming a study from its journal: which directory, and whether this call is the same study.

``search(..., resume=exp_dir)`` and ``ablate(..., resume=exp_dir)`` continue a study whose
driver died (SIGKILL, power loss, Ctrl-C). What defines the study (module, space, metric,
direction, max_epochs, optimizer and its settings, early-stop rule, seed, ablation components,
seeds and hyperparameters) must be what the journal recorded; the budgets (``num_trials``,
``timeout``) may be raised. Everything else (workers, backend, trainer_kwargs, retries...) may
change. The checks here run before any worker starts, and each error says what differs and how
to fix it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_maggy.driver.journal import JOURNAL_NAME, StudyLog, load_study
from lightning_maggy.exceptions import ConfigurationError, JournalError

__all__ = ["check_same_study", "open_study", "settings_of"]

#: experiment.json keys that define the study: a resumed call must match them. key -> how the
#: user sets it.
STUDY_KEYS: dict[str, str] = {
    "name": "the module or function (module_or_fn / module_cls)",
    "kind": "the kind of trial (LightningModule class, train function or function trial)",
    "metric": "metric",
    "direction": "direction",
    "max_epochs": "max_epochs",
    "space": "space",
    "optimizer": "optimizer (its type)",
    "optimizer_settings": "optimizer (its settings)",
    "early_stop": "early_stop (its type)",
    "early_stop_settings": "early_stop (its settings)",
    "seed": "seed",
    "study": "the kind of study (search or ablation)",
    "ablation": "the ablation study (components, seeds and hparams)",
}

#: Budgets: a resumed call may keep or raise them (None means unlimited).
BUDGET_KEYS = ("num_trials", "timeout")


def _plain(value: Any) -> Any:
    """A JSON-able, address-free description of a setting's value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, type) or callable(value):
        owner = value if isinstance(value, type) or hasattr(value, "__qualname__") else type(value)
        return f"{getattr(owner, '__module__', '?')}.{getattr(owner, '__qualname__', type(owner).__name__)}"
    return f"{type(value).__module__}.{type(value).__qualname__}"


def settings_of(obj: Any) -> dict[str, Any]:
    """The constructor settings of an optimizer or early-stop rule, as plain data: every
    ``__init__`` argument that the object keeps as an attribute (``name``, ``_name`` or
    ``_name_arg``), plus its public dataclass attributes (e.g. GP's ``settings``)."""
    out: dict[str, Any] = {}
    try:
        params = inspect.signature(type(obj).__init__).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    for name, param in params.items():
        if name == "self" or param.kind is param.VAR_POSITIONAL:
            continue
        for attr in (name, f"_{name}", f"_{name}_arg"):
            if attr in vars(obj):
                out[name] = _plain(vars(obj)[attr])
                break
    for attr, value in vars(obj).items():
        if not attr.startswith("_") and attr not in out and dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[attr] = _plain(value)
    return out


def open_study(resume: str | os.PathLike[str], exp_dir: str | os.PathLike[str] | None) -> tuple[Path, StudyLog]:
    """The experiment directory to resume and what its journal says. For an ``exp_dir`` URL
    (``s3://...``) the directory is the driver's local copy of the study, brought up to date
    from the URL (:func:`~lightning_maggy.storage.fetch_study`).

    Raises:
        ConfigurationError: ``resume`` holds no journal, ``exp_dir`` names another directory,
            or the journal cannot be read back.
    """
    from lightning_maggy.storage import fetch_study, is_remote, local_path

    remote = is_remote(resume) or (exp_dir is not None and is_remote(exp_dir))
    if exp_dir is None:
        same = True
    elif remote:
        same = str(exp_dir).rstrip("/") == str(resume).rstrip("/")
    else:
        same = Path(local_path(exp_dir)).resolve() == Path(local_path(resume)).resolve()
    if not same:
        raise ConfigurationError(
            f"resume={str(resume)!r} and exp_dir={str(exp_dir)!r} name different directories: a "
            "resumed study continues in its own directory. Pass only resume=, or only exp_dir= "
            "for a new study."
        )
    path = fetch_study(str(resume).rstrip("/")) if remote else Path(local_path(resume))
    journal = path / JOURNAL_NAME
    if not journal.is_file():
        what = "does not exist" if not path.exists() else f"holds no {JOURNAL_NAME}"
        raise ConfigurationError(
            f"resume={str(resume)!r} {what}: resume= continues a study from the journal in its "
            "experiment directory (e.g. resume='maggy_experiments/MyModule-20260101-120000'). "
            "Check the path, or pass exp_dir= to start a new study."
        )
    try:
        log = load_study(journal)
    except JournalError as err:
        raise ConfigurationError(f"resume={str(resume)!r}: the journal cannot be read back: {err}") from err
    if log.experiment is None:
        raise ConfigurationError(
            f"resume={str(resume)!r}: {journal} records no experiment settings to check this call "
            "against; it cannot be resumed. Start a new study with exp_dir=."
        )
    return path, log


def _normal(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, keys strings...)."""
    return json.loads(json.dumps(value, default=str, allow_nan=True))


def _exceeds(new: Any, old: Any) -> bool:
    """Whether budget ``new`` is at least ``old`` (None is unlimited)."""
    if new is None:
        return True
    if old is None:
        return False
    return float(new) >= float(old)


def _differences(what: str, old: Any, new: Any, named: frozenset[str] = frozenset()) -> list[str]:
    """How ``old`` and ``new`` differ, in words: field by field when both are mappings (e.g.
    an ablation study's ``seeds`` and ``hparams``), else as a whole. Fields in ``named`` are
    left out (already named as a difference of their own, e.g. the study's ``seed``)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = [k for k in (*old, *(k for k in new if k not in old)) if old.get(k) != new.get(k)]
        if keys:
            return [f"{what}, {k}: the study has {old.get(k)!r}, this call passes {new.get(k)!r}"
                    for k in keys if k not in named]
    return [f"{what}: the study has {old!r}, this call passes {new!r}"]


def check_same_study(recorded: Mapping[str, Any], current: Mapping[str, Any], resume: str | os.PathLike[str]) -> None:
    """Raises ConfigurationError, listing every difference, when ``current`` (this call's
    settings) is not the study ``recorded`` in the journal, or lowers one of its budgets.
    Keys a journal of an older version did not record are not compared."""
    problems: list[str] = []
    ablation = "ablation" in recorded or "ablation" in current
    for key, what in STUDY_KEYS.items():
        if key not in recorded and key not in current:
            continue
        if ablation and key == "optimizer_settings":  # an ablation's plan: named under "ablation"
            continue
        old, new = _normal(recorded.get(key)), _normal(current.get(key))
        if key in recorded and old != new:
            seed_differs = "seed" in recorded and _normal(recorded["seed"]) != _normal(current.get("seed"))
            problems.extend(_differences(what, old, new, frozenset({"seed"} if seed_differs else ())))
    for key in BUDGET_KEYS:
        if key in recorded and not _exceeds(current.get(key), recorded.get(key)):
            old = "no limit (None)" if recorded.get(key) is None else repr(recorded.get(key))
            problems.append(
                f"{key}: the study has {old}, this call passes {current.get(key)!r} (a resumed study's "
                "budgets may be kept or raised, not lowered or newly limited; None is unlimited)"
            )
    if problems:
        listed = "\n  - ".join(problems)
        raise ConfigurationError(
            f"resume={str(resume)!r}: this call does not continue the study recorded in its "
            f"journal:\n  - {listed}\nPass the same arguments as the study was started with "
            "(see experiment.json; num_trials and timeout may be raised), or pass exp_dir= to "
            "start a new study."
        )
