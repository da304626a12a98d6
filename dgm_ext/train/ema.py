"""Exponential moving average of a module's weights."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """Shadow copy ``s`` of a module's floating-point state, updated after every optimiser
    step as ``s <- decay * s + (1 - decay) * w`` (starting from ``s = w`` at creation).

    Floating-point parameters and buffers are averaged; other buffers (e.g. BatchNorm's
    ``num_batches_tracked``) are copied.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay!r}")
        self.module = module
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            k: v.detach().clone() for k, v in module.state_dict().items()
        }

    @torch.no_grad()
    def update(self) -> None:
        """Fold the module's current weights into the average."""
        for k, v in self.module.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                s.copy_(v)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module | None = None) -> None:
        """Load the averaged weights into ``module`` (default: the tracked module)."""
        (module or self.module).load_state_dict(self.shadow)

    @contextmanager
    def applied(self) -> Iterator[nn.Module]:
        """Temporarily swap the averaged weights into the tracked module."""
        backup = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        self.copy_to()
        try:
            yield self.module
        finally:
            with torch.no_grad():
                self.module.load_state_dict(backup)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and primitives only (``weights_only``-loadable)."""
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; tensors are moved to the shadow's devices."""
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not match the module: keys {sorted(missing)}")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        with torch.no_grad():
            for k, v in state["shadow"].items():
                self.shadow[k].copy_(v)
