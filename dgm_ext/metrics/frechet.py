"""Fréchet distance between two Gaussians fitted to feature sets (FID when the features are
Inception-v3 pool features):

    FD = ‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr √(Σ₁Σ₂)

API:

* ``frechet_distance(a, b)``: each of ``a`` and ``b`` is either a feature matrix (N, F) (torch
  tensor or numpy array) or a precomputed ``(mu, sigma)`` pair (e.g. from
  :func:`dgm_ext.metrics.stats.load_stats`); the two kinds may be mixed.
* ``frechet_distance_from_stats(mu1, sigma1, mu2, sigma2)``: the same from statistics only.
* ``trace_sqrt_product(sigma1, sigma2)``: Tr √(Σ₁Σ₂) alone.

Everything is computed in float64 numpy.

Why not ``scipy.linalg.sqrtm(sigma1 @ sigma2)`` (pytorch-fid): Σ₁Σ₂ is not symmetric, its
Schur-based square root goes complex or NaN when the product is singular (N < F, duplicated
features) and round-off gives it tiny negative or complex eigenvalues; pytorch-fid then adds an
offset to the diagonals or drops imaginary parts. Here the trace term comes from the eigenvalues
of the symmetric positive semi-definite matrix M = √Σ₁ Σ₂ √Σ₁, which is exact in exact
arithmetic: with X = √Σ₁ and Y = √Σ₁ Σ₂, Σ₁Σ₂ = XY and M = YX, and XY and YX have the same
eigenvalues λᵢ (Σ₁Σ₂ = √Σ₁ M √Σ₁⁻¹ is similar to M when Σ₁ is invertible; the XY/YX identity
also covers a singular Σ₁); M is symmetric PSD, so they are real and ≥ 0, and
Tr √(Σ₁Σ₂) = Σᵢ √λᵢ. Only symmetric eigensolvers are used, so nothing complex can appear.
(M is formed in Σ₁'s eigenbasis, Vᵀ M V, which has the same eigenvalues.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .stats import _feature_statistics, as_float64_array, check_stats

__all__ = ["frechet_distance", "frechet_distance_from_stats", "trace_sqrt_product"]

_EPS = float(np.finfo(np.float64).eps)
# A covariance may be off symmetric / PSD by this much (relative to its largest entry /
# eigenvalue) from round-off, e.g. when it was computed or stored in float32; more is an error.
_SYM_RTOL = 1e-5
_PSD_RTOL = 1e-5


def _check_sigma(
    sigma: np.ndarray, name: str, vectors: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Symmetrised ``sigma`` and its eigendecomposition ``(w, V)`` (``V`` is None unless
    ``vectors``), after checking it is finite, symmetric and positive semi-definite within
    round-off."""
    if not np.isfinite(sigma).all():
        raise ValueError(f"{name} contains NaN or Inf")
    scale = float(np.abs(sigma).max()) if sigma.size else 0.0
    asym = float(np.abs(sigma - sigma.T).max()) if sigma.size else 0.0
    if asym > _SYM_RTOL * scale:
        raise ValueError(
            f"{name} is not symmetric (max |{name} - {name}.T| = {asym:.3g}, "
            f"max |{name}| = {scale:.3g}); it must be a covariance matrix"
        )
    sigma = 0.5 * (sigma + sigma.T)
    if vectors:
        w, v = np.linalg.eigh(sigma)
    else:
        w, v = np.linalg.eigvalsh(sigma), None
    top = max(float(w[-1]), 0.0)
    if w[0] < -_PSD_RTOL * top:
        raise ValueError(
            f"{name} is not positive semi-definite: smallest eigenvalue {w[0]:.6g}, "
            f"largest {top:.6g}; it must be a covariance matrix"
        )
    return sigma, w, v


def _trace_sqrt(w1: np.ndarray, v1: np.ndarray, sigma2: np.ndarray) -> float:
    """Σ √λᵢ over the eigenvalues of √Σ₁ Σ₂ √Σ₁, with Σ₁ = V diag(w₁) Vᵀ."""
    f = w1.shape[0]
    # √Σ₁ = V √W Vᵀ. The eigenvalues of a singular PSD matrix come out slightly negative from
    # round-off (√ of them would be NaN): they are clipped to 0, i.e. those directions dropped.
    # With B = V √W (zero columns left out), M = Bᵀ Σ₂ B = Vᵀ (√Σ₁ Σ₂ √Σ₁) V is orthogonally
    # similar to √Σ₁ Σ₂ √Σ₁ (same eigenvalues) and costs one matrix product less.
    keep = w1 > 0.0
    b = v1[:, keep] * np.sqrt(w1[keep])
    if b.shape[1] == 0:
        return 0.0
    m = b.T @ sigma2 @ b
    m = 0.5 * (m + m.T)
    lam = np.linalg.eigvalsh(m)
    # Eigenvalues below the rank tolerance of numpy's matrix_rank (F·ε·λ_max) are round-off of
    # exact zeros (N < F, singular covariances): ±1e-16·λ_max would add √(1e-16·λ_max) each
    # to the sum, so they count as 0.
    cutoff = f * _EPS * max(float(lam[-1]), 0.0)
    return float(np.sqrt(lam[lam > cutoff]).sum())


def trace_sqrt_product(sigma1: Any, sigma2: Any) -> float:
    """Tr √(Σ₁Σ₂) for two covariance matrices (F, F), from the eigenvalues of √Σ₁ Σ₂ √Σ₁ (see
    the module docstring). ``ValueError`` when a matrix is not square, of mismatched size, not
    finite, or not symmetric PSD within round-off."""
    s1 = as_float64_array(sigma1, "sigma1")
    s2 = as_float64_array(sigma2, "sigma2")
    for s, name in ((s1, "sigma1"), (s2, "sigma2")):
        if s.ndim != 2 or s.shape[0] != s.shape[1]:
            raise ValueError(f"{name} must be a square 2-D matrix, got shape {tuple(s.shape)}")
    if s1.shape != s2.shape:
        raise ValueError(f"sigma1 {tuple(s1.shape)} and sigma2 {tuple(s2.shape)} differ in shape")
    s1, w1, v1 = _check_sigma(s1, "sigma1")
    s2, _, _ = _check_sigma(s2, "sigma2", vectors=False)
    return _trace_sqrt(w1, v1, s2)


def frechet_distance_from_stats(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): mu (F,), sigma (F, F),
    tensors or arrays.

    Inputs are validated (shapes, finite, sigma symmetric and positive semi-definite within
    round-off, ``ValueError`` naming the argument). The result is ≥ 0 in exact arithmetic; a
    computed value below 0 by no more than the round-off bound F·√(F·ε)·s/2, with
    s = ‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ (the error of Σ√λᵢ when each λᵢ carries an error of order
    F·ε·‖M‖), is returned as 0.0; anything more negative raises ``ArithmeticError``.
    """
    m1, s1 = check_stats(mu1, sigma1, "1")
    m2, s2 = check_stats(mu2, sigma2, "2")
    for m, i in ((m1, 1), (m2, 2)):
        if not np.isfinite(m).all():
            raise ValueError(f"mu{i} contains NaN or Inf")
    if m1.shape != m2.shape:
        raise ValueError(
            f"the two statistics have different feature widths: mu1 {tuple(m1.shape)}, "
            f"mu2 {tuple(m2.shape)}"
        )
    s1, w1, v1 = _check_sigma(s1, "sigma1")
    s2, _, _ = _check_sigma(s2, "sigma2", vectors=False)
    diff = m1 - m2
    mean_term = float(diff @ diff)
    tr1, tr2 = float(np.trace(s1)), float(np.trace(s2))
    fd = mean_term + tr1 + tr2 - 2.0 * _trace_sqrt(w1, v1, s2)
    if fd < 0.0:
        f = m1.shape[0]
        bound = 0.5 * f * np.sqrt(f * _EPS) * (mean_term + tr1 + tr2)
        if -fd > bound:
            raise ArithmeticError(
                f"Fréchet distance came out negative ({fd:.6g}) beyond round-off "
                f"({-bound:.3g}); the covariances are not valid"
            )
        fd = 0.0
    return fd


def _as_stats(x: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(x, tuple):
        if len(x) != 2:
            raise ValueError(f"{name} as a tuple must be (mu, sigma), got {len(x)} items")
        return as_float64_array(x[0], f"{name}[0] (mu)"), as_float64_array(
            x[1], f"{name}[1] (sigma)"
        )
    return _feature_statistics(x, name)


def frechet_distance(features_a: Any, features_b: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    Each argument is either a feature matrix (N, F) with N ≥ 2 (torch tensor or numpy array;
    N < F is fine) or a precomputed ``(mu, sigma)`` tuple; statistics use
    :func:`~dgm_ext.metrics.stats.feature_statistics` (float64, ``ddof=1`` as pytorch-fid).
    Both must have the same feature width F. See :func:`frechet_distance_from_stats` (errors
    about a pair name it ``mu1``/``sigma1`` or ``mu2``/``sigma2``)."""
    mu1, sigma1 = _as_stats(features_a, "features_a")
    mu2, sigma2 = _as_stats(features_b, "features_b")
    if mu1.ndim == 1 and mu2.ndim == 1 and mu1.shape != mu2.shape:
        raise ValueError(
            f"features_a and features_b have different feature widths: "
            f"{mu1.shape[0]} and {mu2.shape[0]}"
        )
    return frechet_distance_from_stats(mu1, sigma1, mu2, sigma2)
