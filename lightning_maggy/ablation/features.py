"""Worker side: makes left-out input features carry no information, without changing the model.

Two ways, in this order:

1. **Opt-in dropping.** If the DataModule (or, without one, the LightningModule) defines
   ``drop_features(self, names)``, it is called with the left-out feature names right after the
   DataModule is built (before ``prepare_data``/``setup``), and the data is left alone otherwise:
   the DataModule drops the columns itself, and the model must accept the narrower input (for
   example ``nn.LazyLinear`` as its first layer).
2. **Replacing by the training mean** (the default). The training data is read once (at most
   :data:`MAX_MEAN_BATCHES` batches) to compute each left-out feature's mean, and every batch of
   every stage (train, validation, test, predict) has that feature replaced by its mean, through
   the module's ``on_after_batch_transfer`` hook (on a copy of the batch tensors). Batch layouts
   that work without user code:

   - ``(x, y, ...)`` tuples or lists, or a bare tensor ``x``, where ``x`` is a tensor whose
     **last dimension** holds the features (``[N, F]`` tables, ``[N, T, F]`` sequences). A
     feature's column is its index in the data's ``feature_names`` attribute when it has one,
     otherwise in the ``@ablatable(features=[...])`` list (which must then name every column, in
     order);
   - dicts (``{"age": tensor, "fare": tensor, ...}``), or ``(dict, y, ...)``, keyed by feature
     name: the feature's tensor is replaced by its mean over the batch dimension.

   Integer features are replaced by their rounded mean.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from lightning_maggy.ablation.components import declared_features
from lightning_maggy.ablation.surgery import data_owner, prepare_owner
from lightning_maggy.exceptions import AblationError

__all__ = ["MAX_MEAN_BATCHES", "FeatureMask", "leave_out_features"]

#: At most this many training batches are read to compute the means of left-out features.
MAX_MEAN_BATCHES = 200


def _split(batch: Any) -> tuple[Any, Any]:
    """(the input part, a function that rebuilds the batch around a new input part)."""
    if isinstance(batch, (list, tuple)) and batch:
        rest = list(batch[1:])
        if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
            return batch[0], lambda x: type(batch)(x, *rest)
        return batch[0], lambda x: type(batch)([x, *rest])
    return batch, lambda x: x


class FeatureMask:
    """Replaces the named features of a batch by fixed values (their training means).

    Args:
        features: the feature names to replace.
        columns: for tensor inputs, feature name -> index in the last dimension.
    """

    def __init__(self, features: Sequence[str], columns: dict[str, int] | None) -> None:
        self.features = list(features)
        self.columns = columns
        self.fill: dict[str, Any] = {}

    def _is_dict(self, x: Any) -> bool:
        return isinstance(x, dict)

    def check(self, x: Any) -> None:
        if self._is_dict(x):
            missing = [f for f in self.features if f not in x]
            if missing:
                raise AblationError(
                    f"Feature ablation: the batch is a dict without the key(s) {missing}; its keys "
                    f"are {sorted(map(str, x))}. Name the features after the batch's keys."
                )
            return
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) < 2:
            raise AblationError(
                "Feature ablation needs batches whose input is a tensor with the features in its "
                f"last dimension ([N, F]) or a dict keyed by feature name; got {type(x).__name__} "
                f"of shape {None if shape is None else tuple(shape)}. Otherwise let the DataModule "
                "drop the features itself: define drop_features(self, names)."
            )
        if self.columns is None:
            raise AblationError("Feature ablation: no column index for tensor inputs.")
        width = int(shape[-1])
        bad = {f: c for f, c in self.columns.items() if c >= width}
        if bad:
            raise AblationError(
                f"Feature ablation: the input has {width} features in its last dimension, but the "
                f"declared feature names put {sorted(bad)} at columns {sorted(bad.values())}. "
                "Give the DataModule a feature_names attribute listing every column in order."
            )

    def fit(self, batches: Any) -> None:
        """Computes the fill values from training batches."""
        sums: dict[str, Any] = {}
        counts: dict[str, int] = {}
        dtypes: dict[str, Any] = {}
        for i, batch in enumerate(batches):
            if i >= MAX_MEAN_BATCHES:
                break
            x, _ = _split(batch)
            self.check(x)
            for f in self.features:
                v = x[f] if self._is_dict(x) else x[..., self.columns[f]]  # type: ignore[index]
                v = v.double()
                flat = v.reshape(-1) if not self._is_dict(x) else v.reshape(v.shape[0], -1)
                total = flat.sum(0)
                sums[f] = total if f not in sums else sums[f] + total
                counts[f] = counts.get(f, 0) + int(flat.shape[0])
                dtypes[f] = x[f].dtype if self._is_dict(x) else x.dtype
        if not counts:
            raise AblationError("Feature ablation: the training data yielded no batch to compute feature means from.")
        for f in self.features:
            mean = sums[f] / counts[f]
            if not dtypes[f].is_floating_point:
                mean = mean.round()
            self.fill[f] = mean.to(dtypes[f])

    def __call__(self, batch: Any) -> Any:
        x, rebuild = _split(batch)
        if self._is_dict(x):
            x = dict(x)
            for f in self.features:
                old = x[f]
                x[f] = self.fill[f].to(old.device).reshape(old.shape[1:]).expand_as(old).clone()
            return rebuild(x)
        x = x.clone()
        for f in self.features:
            x[..., self.columns[f]] = self.fill[f].to(x.device)  # type: ignore[index]
        return rebuild(x)


def _columns(owner: Any, module: Any, x: Any, features: Sequence[str]) -> dict[str, int]:
    """Feature name -> column of a tensor input ``x``: the index in the data's ``feature_names``,
    else in the ``@ablatable(features=...)`` list, which must then name every column."""
    names = list(getattr(owner, "feature_names", None) or declared_features(owner) or declared_features(module))
    shape = getattr(x, "shape", None)
    if shape is not None and len(shape) >= 2 and len(names) != int(shape[-1]):
        raise AblationError(
            f"Feature ablation: the input tensor has {int(shape[-1])} columns but the data names "
            f"{len(names)} features ({names}), so a feature's column is ambiguous. Give the "
            "DataModule a feature_names attribute that lists every column in order."
        )
    missing = [f for f in features if f not in names]
    if missing:
        raise AblationError(f"Feature ablation: {missing} are not among the data's features {names}.")
    return {f: names.index(f) for f in features}


def leave_out_features(module: Any, datamodule: Any, features: Sequence[str]) -> None:
    """Makes ``features`` uninformative for this trial: through the data's own
    ``drop_features(names)`` when it defines one, otherwise by replacing them with their training
    means in every batch (see the module docstring)."""
    owner = data_owner(module, datamodule)
    dropper = getattr(owner, "drop_features", None)
    if callable(dropper):
        dropper(list(features))
        return
    prepare_owner(owner)
    mask = FeatureMask(features, None)
    loader = owner.train_dataloader()
    x, _ = _split(next(iter(loader)))
    if not isinstance(x, dict):
        mask.columns = _columns(owner, module, x, features)
    mask.fit(loader)
    print(f"[maggy] ablation: features {list(features)} replaced by their training means "
          f"{ {f: round(float(v), 6) for f, v in mask.fill.items() if v.numel() == 1} }", file=sys.stderr)
    target = _hook_owner(module, datamodule)
    original = target.on_after_batch_transfer

    def on_after_batch_transfer(batch: Any, dataloader_idx: int) -> Any:
        # The means are those of the loader's batches, so they replace the features there, before
        # the user's own hook (which may normalize them, or reshape the batch) sees the batch.
        return original(mask(batch), dataloader_idx)

    target.on_after_batch_transfer = on_after_batch_transfer


def _hook_owner(module: Any, datamodule: Any) -> Any:
    """Where to wrap ``on_after_batch_transfer`` so that Lightning still calls the user's own
    hook and no new warning appears: Lightning calls the DataModule's hook when the DataModule
    overrides it (an instance attribute counts), otherwise the module's."""
    from lightning_maggy.lightning.namespace import namespace_of

    if datamodule is None:
        return module
    hook = "on_after_batch_transfer"
    ns = namespace_of(module)
    dm_overrides = getattr(type(datamodule), hook, None) is not getattr(ns.LightningDataModule, hook)
    module_overrides = getattr(type(module), hook) is not getattr(ns.LightningModule, hook)
    return module if module_overrides and not dm_overrides else datamodule
