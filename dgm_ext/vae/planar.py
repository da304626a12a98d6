"""Planar-flow posterior for the VAE (Rezende & Mohamed, 2015).

``q(z_K|x)``: ``z_0 ~ N(mu(x), diag exp(logvar(x)))`` followed by K planar layers
``z ← z + û_k tanh(w_k·z + b_k)`` whose parameters are produced per example from the
encoder's hidden features (amortised). ``û`` is the invertibility-preserving
reparameterisation of appendix A: ``û = u + (m(w·u) − w·u) w / ‖w‖²`` with
``m(a) = −1 + softplus(a)``, which guarantees ``w·û > −1``; it is
:func:`dgm_ext.flows.planar.planar_u_hat`, the one shared with the planar flows (with its
float32 guard).

Both posteriors run on the op backend handed to ``forward``: the amortised one on
``ops.planar_flow_rows`` (per-example parameters, shared by the posterior samples), the
non-amortised one on ``ops.planar_flow`` (one set of parameters for the whole batch). With the
fused backend (``dgm_ext.ops``) these are the fused kernels; with ``ops="reference"`` the
plain-PyTorch references.

The amortised posterior is the conditional planar transform of the flows
(:class:`dgm_ext.flows.ConditionalPlanarTransform`, context = encoder features): the same
head (:func:`~dgm_ext.flows.planar.planar_head`), parameter layout
(:func:`~dgm_ext.flows.planar.split_planar_params`) and per-row application
(:func:`~dgm_ext.flows.planar.planar_flow_amortized`); it keeps its own ``head`` attribute, so
the VAE's state-dict keys are unchanged.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor, nn

from dgm_ext.flows.planar import (
    planar_flow_amortized,
    planar_head,
    planar_u_hat,
    split_planar_params,
)

__all__ = ["PlanarPosterior", "planar_u_hat"]


class PlanarPosterior(nn.Module):
    """K planar layers on top of the encoder Gaussian.

    ``amortized=True``: a linear head maps the encoder features ``h`` to per-example
    ``(u, w, b)``, applied with ``ops.planar_flow_rows`` (as
    :class:`~dgm_ext.flows.ConditionalPlanarTransform` does); ``amortized=False``: global
    parameters, applied with ``ops.planar_flow``.
    """

    def __init__(
        self, latent_dim: int, length: int, feature_dim: int, amortized: bool = True
    ) -> None:
        super().__init__()
        if length < 1:
            raise ValueError(f"length (number of planar layers) must be >= 1, got {length}")
        self.latent_dim, self.length, self.amortized = latent_dim, length, amortized
        if amortized:
            self.head = planar_head(feature_dim, length, latent_dim)
        else:
            self.u = nn.Parameter(torch.randn(length, latent_dim) * 0.01)
            self.w = nn.Parameter(torch.randn(length, latent_dim) * 0.01)
            self.b = nn.Parameter(torch.zeros(length))

    def params(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw ``(u, w, b)``: per example (B, K, d)/(B, K) when amortised, else (K, d)/(K,)."""
        if not self.amortized:
            return self.u, self.w, self.b
        return split_planar_params(self.head(h), self.length, self.latent_dim)

    def forward(self, z0: Tensor, h: Tensor, ops: ModuleType) -> tuple[Tensor, Tensor]:
        """Push ``z0`` (*S, *B, d) through the flow; returns ``(z_K, logdet (*S, *B))``.

        ``h`` (*B, F) are the encoder features of the batch; amortised, each example's layers
        apply to all its samples ``*S`` (``ops.planar_flow_rows``, parameters not expanded).
        """
        u, w, b = self.params(h)
        if self.amortized:
            return planar_flow_amortized(z0, u, w, b, ops)
        flat = z0.reshape(-1, self.latent_dim)
        zk, logdet = ops.planar_flow(flat.contiguous(), planar_u_hat(u, w), w, b)
        return zk.reshape(z0.shape), logdet.reshape(z0.shape[:-1])
