"""Fused probabilistic ops for deep generative models (SPEC §1).

Every function is a thin wrapper over a ``torch.ops.dgm_ext`` custom operator with C++ (CPU)
and CUDA kernels, fused forward and backward, fake kernels for ``torch.compile`` and autograd.
Reductions run over the last dimension (the "D" of ``(*B, D)``); inputs broadcast.
Pure-PyTorch references with identical signatures are in :mod:`dgm_ext.ops.reference`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import Tensor

from dgm_ext import _C  # noqa: F401  (registers the operators)
from dgm_ext.ops import _registration  # noqa: F401  (fake kernels and autograd)

_ops = torch.ops.dgm_ext


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """Bernoulli log-likelihood ``sum_d x log σ(l) + (1 - x) log σ(-l)``, stable for any logit.

    logits: (*B, D) floating; x: broadcastable to logits, values in [0, 1]. Returns (*B).
    """
    return _ops.bernoulli_log_prob(logits, x)


def gaussian_log_prob(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """Diagonal Gaussian log-density ``sum_d log N(x; mean, exp(logvar))``.

    x, mean, logvar: (*B, D), broadcastable. Returns (*B).
    """
    return _ops.gaussian_log_prob(x, mean, logvar)


def beta_log_prob(x: Tensor, alpha: Tensor, beta: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Beta log-density ``sum_d log Beta(x; α, β)`` with x clamped to [eps, 1 - eps].

    x, alpha, beta: (*B, D), broadcastable; alpha, beta > 0. Returns (*B).
    """
    return _ops.beta_log_prob(x, alpha, beta, float(eps))


def categorical_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """Categorical log-likelihood ``sum_d log softmax(logits_d)[x_d]``.

    logits: (*B, D, K) floating; x: int64 class indices (*B, D), broadcastable, in [0, K).
    Returns (*B).
    """
    return _ops.categorical_log_prob(logits, x)[0]


def kl_normal_std(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, diag exp(logvar)) || N(0, I))``; mu, logvar (*B, L). Returns (*B)."""
    return _ops.kl_normal_std(mu, logvar)


def kl_normal(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL between diagonal Gaussians q and p; all (*B, L), broadcastable. Returns (*B)."""
    return _ops.kl_normal(mu_q, logvar_q, mu_p, logvar_p)


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
    """``mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` drawn (torch's RNG) when None.

    mu, logvar (and eps): (*B, L), broadcastable. Returns the broadcast shape.
    """
    if eps is None:
        shape = torch.broadcast_shapes(mu.shape, logvar.shape)
        eps = torch.randn(shape, dtype=mu.dtype, device=mu.device)
    return _ops.reparameterize(mu, logvar, eps)


def affine_coupling(
    x: Tensor, s: Tensor, t: Tensor, mask: Tensor, reverse: bool = False
) -> tuple[Tensor, Tensor]:
    """RealNVP affine coupling ``y = m⊙x + (1-m)⊙(x·e^s + t)`` (its inverse if ``reverse``).

    x: (N, ...); s, t, mask broadcastable to x (mask is treated as a constant).
    Returns (y, logdet) with logdet (N,) = Σ (1-m)⊙s, negated when ``reverse``.
    """
    return _ops.affine_coupling(x, s, t, mask, bool(reverse))


def planar_flow(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """K planar layers ``z <- z + u_k tanh(w_k·z + b_k)`` applied in order.

    z (N, d), u (K, d), w (K, d), b (K,). u is used as given (see
    :mod:`dgm_ext.flows` for the invertible û). Returns (z_K, logdet (N,)) with
    logdet = Σ_k log|1 + tanh'(w_k·z + b_k) u_k·w_k|.
    """
    z_out, logdet, _ = _ops.planar_flow(z, u, w, b)
    return z_out, logdet


def planar_flow_rows(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """K planar layers with per-row parameters, shared over leading sample dimensions.

    z (*S, N, d); u, w (N, K, d); b (N, K). Row n of z (for every index of *S) goes through
    ``z <- z + u[n, k] tanh(w[n, k]·z + b[n, k])``, k = 0..K-1, e.g. an amortised flow
    posterior with S samples of a batch of N examples. The parameters are read in place for
    every sample (never expanded), and their gradients are summed over *S deterministically.
    u is used as given. Returns (z_K (*S, N, d), logdet (*S, N)).
    """
    z_out, logdet, _ = _ops.planar_flow_rows(z, u, w, b)
    return z_out, logdet


# Backends resolved so far, by name. A dict lookup, unlike importlib.import_module, is traced
# by torch.compile: a model that resolves its backend inside training_step (by name, so that
# it deep-copies) compiles into one graph instead of breaking at every resolution.
_BACKENDS: dict[str, ModuleType] = {}
_ALIASES = {"fused": "dgm_ext.ops", "reference": "dgm_ext.ops.reference"}


def resolve_ops(ops: ModuleType | str | None) -> ModuleType:
    """The op backend: a module, ``"fused"`` (``dgm_ext.ops``), ``"reference"`` or a name."""
    if isinstance(ops, ModuleType):
        return ops
    if ops is None:
        ops = "fused"
    if not isinstance(ops, str):
        raise TypeError(f"ops must be a module, 'fused', 'reference' or a module name, got {ops!r}")
    name = _ALIASES.get(ops, ops)
    module = _BACKENDS.get(name)
    if module is None:
        module = _BACKENDS[name] = importlib.import_module(name)
    return module


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
    "resolve_ops",
]
