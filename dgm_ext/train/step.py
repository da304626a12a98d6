"""The :class:`StepContext` of custom steps: what a model's ``train_step(batch, ctx)`` uses
to update its parameters (the Trainer's finite check, backward, gradient averaging, unscaling,
clipping and the optimiser step, in that order)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .config import TrainerConfig

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["StepContext"]


class StepContext:
    """What a custom ``train_step(batch, ctx)`` uses to update parameters."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers returned by ``configure_optimizers``, in order."""
        return self._trainer.optimizers

    @property
    def global_step(self) -> int:
        """Number of completed training steps before this one."""
        return self._trainer.global_step

    @property
    def epoch(self) -> int:
        """0-based index of the current epoch."""
        return self._trainer.epoch

    @property
    def config(self) -> TrainerConfig:
        """The trainer's configuration."""
        return self._trainer.config

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        loss: Tensor,
        *,
        name: str = "loss",
        retain_graph: bool = False,
    ) -> None:
        """One update of ``optimizer`` on ``loss``: finite check (raises
        :class:`NonFiniteLossError`), ``zero_grad``, ``backward``, cross-process gradient
        averaging, clipping to ``config.grad_clip``, optional gradient check, ``step``."""
        t = self._trainer
        t._check_finite(loss, name)
        optimizer.zero_grad(set_to_none=True)
        t._backward(loss, retain_graph=retain_graph)
        self._apply(optimizer, name)

    def _apply(self, optimizer: torch.optim.Optimizer, name: str) -> None:
        """After the backward pass(es): average over processes, unscale (fp16), clip, check
        and step; mark the EMA due."""
        t = self._trainer
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if t._reduce_grads_manually:
            t._all_reduce_grads(params)
        cfg = t.config
        scaler = t._scaler
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.grad_clip is not None or cfg.check_grads:
            max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            # under fp16 a non-finite gradient is the GradScaler's business: it skips the step
            if cfg.check_grads and scaler is None:
                t._check_finite(norm, f"gradient norm of {name}")
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if id(optimizer) in t._ema_optimizers:
            t._ema_due = True
