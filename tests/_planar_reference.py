"""A plain-PyTorch planar flow with any broadcastable parameters, for the VAE tests (moved
here from ``dgm_ext.vae.planar``: the library runs planar layers on ``dgm_ext.ops``)."""

from __future__ import annotations

import torch
from torch import Tensor


def planar_flow_batched(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """K planar layers with per-example parameters.

    ``z`` (*B, d); ``u``, ``w`` (*B, K, d) or (K, d); ``b`` (*B, K) or (K,).
    Returns ``(z_K, logdet)`` with logdet of shape (*B,). ``u`` is applied as given.
    """
    logdet = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    for k in range(u.shape[-2]):
        uk, wk, bk = u[..., k, :], w[..., k, :], b[..., k]
        a = (wk * z).sum(-1) + bk
        t = torch.tanh(a)
        psi_u = (1.0 - t * t) * (wk * uk).sum(-1)
        logdet = logdet + torch.log(torch.abs(1.0 + psi_u) + 1e-12)
        z = z + uk * t.unsqueeze(-1)
    return z, logdet
