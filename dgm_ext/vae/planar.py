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
"""

from __future__ import annotations

import math
from types import ModuleType

import torch
from torch import Tensor, nn

from dgm_ext.flows.planar import planar_u_hat

__all__ = ["PlanarPosterior", "planar_u_hat"]


class PlanarPosterior(nn.Module):
    """K planar layers on top of the encoder Gaussian.

    ``amortized=True``: a linear head maps the encoder features ``h`` to per-example
    ``(u, w, b)``, applied with ``ops.planar_flow_rows``; ``amortized=False``: global
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
            self.head = nn.Linear(feature_dim, length * (2 * latent_dim + 1))
            nn.init.normal_(self.head.weight, std=1e-3)
            nn.init.zeros_(self.head.bias)
        else:
            self.u = nn.Parameter(torch.randn(length, latent_dim) * 0.01)
            self.w = nn.Parameter(torch.randn(length, latent_dim) * 0.01)
            self.b = nn.Parameter(torch.zeros(length))

    def params(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw ``(u, w, b)``: per example (B, K, d)/(B, K) when amortised, else (K, d)/(K,)."""
        if not self.amortized:
            return self.u, self.w, self.b
        d, k = self.latent_dim, self.length
        p = self.head(h)
        u = p[..., : k * d].unflatten(-1, (k, d))
        w = p[..., k * d : 2 * k * d].unflatten(-1, (k, d))
        b = p[..., 2 * k * d :]
        return u, w, b

    def forward(self, z0: Tensor, h: Tensor, ops: ModuleType) -> tuple[Tensor, Tensor]:
        """Push ``z0`` (*S, *B, d) through the flow; returns ``(z_K, logdet (*S, *B))``.

        ``h`` (*B, F) are the encoder features of the batch; amortised, each example's layers
        apply to all its samples ``*S`` (``ops.planar_flow_rows``, parameters not expanded).
        """
        u, w, b = self.params(h)
        u_hat = planar_u_hat(u, w)
        d, k = self.latent_dim, self.length
        if not self.amortized:
            flat = z0.reshape(-1, d)
            zk, logdet = ops.planar_flow(flat.contiguous(), u_hat, w, b)
            return zk.reshape(z0.shape), logdet.reshape(z0.shape[:-1])
        batch = tuple(u.shape[:-2])
        if z0.dim() < len(batch) + 1 or tuple(z0.shape[-1 - len(batch) : -1]) != batch:
            raise ValueError(
                f"z0 {tuple(z0.shape)} must end with the batch shape {batch} of h and the "
                f"latent dimension {d}"
            )
        n = math.prod(batch)
        samples = z0.shape[: z0.dim() - 1 - len(batch)]
        zk, logdet = ops.planar_flow_rows(
            z0.reshape(*samples, n, d),
            u_hat.reshape(n, k, d),
            w.reshape(n, k, d),
            b.reshape(n, k),
        )
        return zk.reshape(z0.shape), logdet.reshape(z0.shape[:-1])
