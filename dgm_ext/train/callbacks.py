"""Callbacks: per-run work (sample grids, sample quality over training, figures, saving the
model) that the Trainer calls at fixed points, each with its own state in the checkpoint.

In the spirit of PyTorch Lightning's ``Callback``: a callback overrides the hooks it needs
and, when it keeps state across epochs (a best score, a history of numbers, a fixed noise
batch), ``state_dict``/``load_state_dict``. The Trainer saves every callback's state in each
checkpoint under its :attr:`Callback.state_key` and restores it on resume before training
continues, so a resumed run's callbacks continue exactly where they were.

Order within an epoch: the training batches; validation, then :meth:`on_validation_end`;
the model's own ``on_epoch_end`` hook; :meth:`on_epoch_end` of each callback, in the order
given (numbers it returns join the epoch's metrics row); the epoch's checkpoint (with every
callback's state) and metric files. Hooks run on every process; write files on
``trainer.is_main`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["Callback", "LambdaCallback"]


class Callback:
    """Base class of Trainer callbacks; every hook is a no-op by default."""

    @property
    def state_key(self) -> str:
        """The name of this callback's state in checkpoints (default: the class name).
        Override it when one run holds several callbacks of the same class."""
        return type(self).__qualname__

    def on_fit_start(self, trainer: Trainer) -> None:
        """After a resume (or a fresh start), before the first batch of this ``fit``."""

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """After validation of the epoch (not called without a ``val_set``); ``metrics`` are
        the ``val_*`` means."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> Mapping[str, float] | None:
        """At the end of each epoch, before its checkpoint; ``row`` holds the epoch's metrics
        so far (``row["epoch"]`` is 1-based). Returned numbers are added to the row."""
        return None

    def on_fit_end(self, trainer: Trainer) -> None:
        """When ``fit`` finishes normally (all epochs, ``max_steps`` or early stopping)."""

    def state_dict(self) -> dict[str, Any]:
        """What must survive an interruption (tensors and primitive containers only: the
        checkpoint is loaded with ``weights_only=True``)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class LambdaCallback(Callback):
    """A stateless callback from a function ``on_epoch_end(trainer, row) -> dict | None``."""

    def __init__(self, on_epoch_end: Any, name: str = "LambdaCallback") -> None:
        self._fn, self._name = on_epoch_end, name

    @property
    def state_key(self) -> str:
        return self._name

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> Mapping[str, float] | None:
        return self._fn(trainer, row)
