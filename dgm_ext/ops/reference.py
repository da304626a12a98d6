"""Pure-PyTorch references of every :mod:`dgm_ext.ops` function (same signatures).

Used by the tests and as the benchmark baseline (eager and under ``torch.compile``). They are
written the straightforward way one would in a model, with the usual stable formulations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """sum_d x log sigmoid(l) + (1 - x) log sigmoid(-l), via PyTorch's fused BCE-with-logits."""
    logits, x = torch.broadcast_tensors(logits, x)
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def gaussian_log_prob(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """sum_d log N(x; mean, exp(logvar))."""
    return (-0.5 * (_LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))).sum(-1)


def beta_log_prob(x: Tensor, alpha: Tensor, beta: Tensor, eps: float = 1e-6) -> Tensor:
    """sum_d log Beta(clamp(x, eps, 1 - eps); alpha, beta)."""
    xc = x.clamp(eps, 1 - eps)
    lbeta = torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(alpha + beta)
    return ((alpha - 1) * torch.log(xc) + (beta - 1) * torch.log1p(-xc) - lbeta).sum(-1)


def categorical_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """sum_d log softmax(logits_d)[x_d]; logits (*B, D, K), x int64 (*B, D)."""
    logp = torch.log_softmax(logits, dim=-1)
    shape = torch.broadcast_shapes(logp.shape[:-1], x.shape)
    logp = logp.expand(*shape, logits.shape[-1])
    idx = x.expand(shape).unsqueeze(-1)
    return logp.gather(-1, idx).squeeze(-1).sum(-1)


def kl_normal_std(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I))."""
    return 0.5 * (mu**2 + torch.exp(logvar) - 1 - logvar).sum(-1)


def kl_normal(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu_q, diag exp(logvar_q)) || N(mu_p, diag exp(logvar_p)))."""
    return 0.5 * (
        logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p) - 1
    ).sum(-1)


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
    """mu + exp(logvar / 2) * eps, eps ~ N(0, I) drawn when None."""
    if eps is None:
        eps = torch.randn(
            torch.broadcast_shapes(mu.shape, logvar.shape), dtype=mu.dtype, device=mu.device
        )
    return mu + torch.exp(0.5 * logvar) * eps


def affine_coupling(
    x: Tensor, s: Tensor, t: Tensor, mask: Tensor, reverse: bool = False
) -> tuple[Tensor, Tensor]:
    """y = m x + (1 - m)(x e^s + t) (or its inverse); logdet = sum (1 - m) s (negated)."""
    om = 1 - mask
    if reverse:
        y = mask * x + om * (x - t) * torch.exp(-s)
        logdet = -(om * s).expand_as(x).flatten(1).sum(1)
    else:
        y = mask * x + om * (x * torch.exp(s) + t)
        logdet = (om * s).expand_as(x).flatten(1).sum(1)
    return y, logdet


def planar_flow(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """K planar layers z <- z + u_k tanh(w_k . z + b_k), with the summed log|det J|."""
    logdet = z.new_zeros(z.shape[0])
    for k in range(u.shape[0]):
        h = torch.tanh(z @ w[k] + b[k])
        logdet = logdet + torch.log(torch.abs(1 + (1 - h**2) * (u[k] @ w[k])))
        z = z + h.unsqueeze(-1) * u[k]
    return z, logdet


def planar_flow_rows(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """planar_flow with per-row parameters: z (*S, N, d), u and w (N, K, d), b (N, K)."""
    logdet = z.new_zeros(z.shape[:-1])
    for k in range(u.shape[1]):
        uk, wk = u[:, k], w[:, k]
        h = torch.tanh((z * wk).sum(-1) + b[:, k])
        logdet = logdet + torch.log(torch.abs(1 + (1 - h**2) * (uk * wk).sum(-1)))
        z = z + h.unsqueeze(-1) * uk
    return z, logdet


__all__ = [
    "affine_coupling",
    "bernoulli_log_prob",
    "beta_log_prob",
    "categorical_log_prob",
    "gaussian_log_prob",
    "kl_normal",
    "kl_normal_std",
    "planar_flow",
    "planar_flow_rows",
    "reparameterize",
]
