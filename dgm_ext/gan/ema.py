"""Generator EMA for GANs: parameters averaged, buffers copied (as StudioGAN does)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dgm_ext.train.ema import ModelEMA

__all__ = ["GeneratorEMA"]


class GeneratorEMA(ModelEMA):
    """:class:`~dgm_ext.train.ema.ModelEMA` whose buffers are copied, not averaged.

    After each :meth:`update`, every parameter's shadow is ``decay * s + (1 - decay) * w``
    while every buffer (BatchNorm ``running_mean``/``running_var``/``num_batches_tracked``,
    spectral-norm vectors, ...) equals the live generator's. ``state_dict`` /
    ``load_state_dict`` (tensors and plain types, ``weights_only``-loadable), ``copy_to`` and
    ``applied`` are inherited; :meth:`averaged_module` gives a standalone EMA generator.
    """

    def __init__(self, module: nn.Module, decay: float = 0.998) -> None:
        super().__init__(module, decay)
        params = {k for k, _ in module.named_parameters(remove_duplicate=False)}
        self.buffer_keys: list[str] = [k for k in self.shadow if k not in params]

    @torch.no_grad()
    def update(self) -> None:
        """Average the parameters into the shadow and copy the buffers."""
        super().update()
        live = self.module.state_dict()
        for k in self.buffer_keys:
            self.shadow[k].copy_(live[k])

    def averaged_module(self) -> nn.Module:
        """A new copy of the generator holding the EMA weights, in eval mode, frozen."""
        ema = copy.deepcopy(self.module)
        self.copy_to(ema)
        ema.requires_grad_(False)
        return ema.eval()
