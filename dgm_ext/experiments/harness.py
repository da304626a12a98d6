"""The one training harness of the experiments and the ``train`` commands.

:class:`TrainingRun` trains one model in one run directory through the shared
:class:`~dgm_ext.train.Trainer`: it announces a resume, builds the ``TrainerConfig`` from the
:class:`~dgm_ext.experiments.common.RunContext` (seed, device, progress, compiled step) and
the family's settings, and hands the per-epoch work to Trainer callbacks
(:mod:`dgm_ext.experiments.callbacks`: sample grids, sample quality, per-epoch functions,
saving the model). GAN and RealNVP runs are the same harness with their callbacks
(:class:`~dgm_ext.experiments.gan_common.GANTraining`,
:class:`~dgm_ext.experiments.realnvp_mnist.FlowTraining`); VAEs use it through
:func:`~dgm_ext.experiments.common.fit_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dgm_ext.experiments.common import RunContext, _is_main_process, resume_message
from dgm_ext.train import Callback

__all__ = ["TrainingRun"]


class TrainingRun:
    """One training run of ``model`` in ``run_dir`` (resumed when it holds a checkpoint).

    ``lr``, ``grad_clip``, ``ema_decay`` and ``patience`` go to the ``TrainerConfig``
    (``lr=None``: the trainer's default, for models that configure their own optimisers),
    then the context's ``trainer`` settings over them;
    ``compile=False`` keeps the context's ``--compile`` out (models with their own
    ``train_step``); ``callbacks`` are the Trainer callbacks; ``extra`` is recorded in
    ``config.json``. After :meth:`fit`, ``trainer`` and ``rows`` hold the Trainer and its
    per-epoch metric rows.
    """

    def __init__(
        self,
        ctx: RunContext,
        model: torch.nn.Module,
        run_dir: Path,
        *,
        epochs: int,
        batch_size: int,
        lr: float | None = None,
        grad_clip: float | None = None,
        ema_decay: float | None = None,
        patience: int | None = None,
        compile: bool = True,
        callbacks: Sequence[Callback] = (),
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.ctx, self.model, self.run_dir = ctx, model, Path(run_dir)
        self.epochs, self.batch_size = epochs, batch_size
        self.lr, self.grad_clip, self.ema_decay, self.patience = lr, grad_clip, ema_decay, patience
        self.compile = compile
        self.callbacks = list(callbacks)
        self.extra = dict(extra or {})
        self.trainer: Any = None
        self.rows: list[dict] = []

    def config(self) -> Any:
        """The ``TrainerConfig`` of this run."""
        from dgm_ext.train import TrainerConfig

        ctx = self.ctx
        settings: dict[str, Any] = {
            "run_dir": str(self.run_dir),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "grad_clip": self.grad_clip,
            "ema_decay": self.ema_decay,
            "patience": self.patience,
            "seed": ctx.seed,
            "progress": ctx.progress,
            "device": ctx.device,
            "extra": self.extra,
        }
        if self.lr is not None:
            settings["lr"] = self.lr
        if self.compile:
            settings.update(ctx.compile_options())
        settings.update(ctx.trainer)  # the user's settings (train --grad-clip, ...) win
        return TrainerConfig(**settings)

    def fit(self, train_set: Any, val_set: Any = None) -> list[dict]:
        """Train (resuming ``run_dir`` when it holds a checkpoint); returns the epoch rows."""
        from dgm_ext.train import Trainer

        msg = resume_message(self.run_dir, self.epochs)
        if msg is not None and _is_main_process():
            self.ctx.log(msg)
        self.trainer = Trainer(self.model, self.config(), callbacks=self.callbacks)
        self.rows = self.trainer.fit(train_set, val_set)
        return self.rows
