"""Inception Score and Kernel Inception Distance from network outputs.

* ``inception_score(probs, splits=10)``: Salimans et al. 2016, as the original improved-gan
  code and torch-fidelity compute it.
* ``kernel_inception_distance(features_a, features_b, subsets=100, subset_size=1000, seed=0)``:
  Bińkowski et al. 2018, unbiased MMD² with the cubic polynomial kernel averaged over random
  subsets, as their code and torch-fidelity compute it.

Inputs are torch tensors or numpy arrays; everything is computed in float64 numpy.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.special import xlogy

from .stats import as_float64_array, check_features

__all__ = [
    "inception_score",
    "kernel_inception_distance",
    "kid_subset_indices",
    "mmd2_unbiased",
    "polynomial_kernel",
]

# Rows of ``probs`` must sum to 1 within this (softmax outputs in float32 do to ~1e-6).
PROBS_SUM_ATOL = 1e-3


def inception_score(probs: Any, splits: int = 10) -> tuple[float, float]:
    """Inception Score ``(mean, std)`` of class probabilities ``probs`` (N, C).

    The rows are cut, in the given order and without shuffling, into ``splits`` contiguous
    chunks ``probs[i*N//splits : (i+1)*N//splits]`` (the boundaries of the original code and
    torch-fidelity; when N is not a multiple of ``splits`` the later chunks are the longer ones,
    unlike ``np.array_split``). For each chunk, with p(y) the chunk's mean row,
    IS = exp(mean over rows x of KL(p(y|x) ‖ p(y))), 0·log 0 taken as 0. Returns the mean and
    the standard deviation (``ddof=0``, as the original) over chunks.

    ``ValueError`` unless ``probs`` is 2-D, finite, non-negative, its rows sum to 1 within
    ``PROBS_SUM_ATOL``, and N ≥ ``splits`` ≥ 1.
    """
    p = as_float64_array(probs, "probs")
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (samples, classes), got shape {tuple(p.shape)}")
    if isinstance(splits, bool) or not isinstance(splits, int | np.integer) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}")
    n = p.shape[0]
    if n < splits:
        raise ValueError(f"probs has {n} rows, fewer than splits={splits}")
    if p.shape[1] < 1:
        raise ValueError("probs has no class columns")
    if not np.isfinite(p).all():
        raise ValueError("probs contains NaN or Inf")
    if (p < 0).any():
        raise ValueError(f"probs must be non-negative (min {p.min():.3g})")
    err = np.abs(p.sum(axis=1) - 1.0)
    if (err > PROBS_SUM_ATOL).any():
        row = int(err.argmax())
        raise ValueError(
            f"probs rows must sum to 1 (within {PROBS_SUM_ATOL}): row {row} sums to "
            f"{p[row].sum():.6g}; pass softmax probabilities, not logits"
        )
    scores = np.empty(splits)
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        py = part.mean(axis=0, keepdims=True)
        # Σ_y p log p − p log p(y); xlogy(0, ·) = 0, and p(y) > 0 wherever some p > 0.
        kl = (xlogy(part, part) - xlogy(part, py)).sum(axis=1)
        scores[i] = np.exp(kl.mean())
    return float(scores.mean()), float(scores.std())


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cubic polynomial kernel matrix k(x, y) = (xᵀy / d + 1)³ between the rows of ``x`` (m, d)
    and ``y`` (n, d)."""
    d = x.shape[1]
    k = x @ y.T / d + 1.0
    return k * k * k  # 8x faster than k ** 3 (numpy's generic power) on 1000x1000 blocks


def mmd2_unbiased(x: Any, y: Any) -> float:
    """Unbiased estimate of MMD² between the rows of ``x`` (m, d) and ``y`` (n, d), m, n ≥ 2,
    with :func:`polynomial_kernel`: mean of k(xᵢ, xⱼ) over i ≠ j, plus the same for y, minus
    twice the mean of k(xᵢ, yⱼ) over all pairs."""
    x = as_float64_array(x, "x")
    y = as_float64_array(y, "y")
    m, n = x.shape[0], y.shape[0]
    kxx = polynomial_kernel(x, x)
    kyy = polynomial_kernel(y, y)
    kxy = polynomial_kernel(x, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.sum() / (m * n))


def kid_subset_indices(
    n_a: int, n_b: int, subsets: int, subset_size: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The row indices :func:`kernel_inception_distance` uses: for each of ``subsets`` subsets,
    ``subset_size`` distinct rows of A, then ``subset_size`` distinct rows of B, each drawn by
    ``np.random.default_rng(seed).choice(n, subset_size, replace=False)`` in that order
    (rows may repeat across subsets, never within one). ``subset_size`` must not exceed
    ``min(n_a, n_b)``."""
    if subset_size > min(n_a, n_b):
        raise ValueError(f"subset_size={subset_size} exceeds min(n_a, n_b)={min(n_a, n_b)}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(subsets):
        ia = rng.choice(n_a, subset_size, replace=False)
        ib = rng.choice(n_b, subset_size, replace=False)
        out.append((ia, ib))
    return out


def kernel_inception_distance(
    features_a: Any,
    features_b: Any,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance ``(mean, std)`` between feature sets A (N_a, F) and B (N_b, F).

    For each of ``subsets`` subsets, ``subset_size`` rows of A and of B are drawn without
    replacement (see :func:`kid_subset_indices`; deterministic given ``seed``) and the unbiased
    MMD² with the cubic polynomial kernel (:func:`mmd2_unbiased`) is computed; returns the mean
    and the standard deviation (``ddof=0``, as torch-fidelity) over subsets. KID can be
    slightly negative: the estimate is unbiased, so it scatters around 0 for equal
    distributions.

    When ``subset_size`` exceeds ``min(N_a, N_b)`` it is capped there with a ``UserWarning``
    (with ``subset_size`` equal to both N every subset is all the data, so std is 0).
    """
    a = check_features(features_a, "features_a")
    b = check_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"features_a and features_b have different feature widths: "
            f"{a.shape[1]} and {b.shape[1]}"
        )
    for value, name in ((subsets, "subsets"), (subset_size, "subset_size")):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be at least 2, got {subset_size}")
    cap = min(a.shape[0], b.shape[0])
    if subset_size > cap:
        warnings.warn(
            f"kernel_inception_distance: subset_size={subset_size} exceeds the smaller feature "
            f"set ({cap} rows); using subset_size={cap}",
            UserWarning,
            stacklevel=2,
        )
        subset_size = cap
    mmds = np.array(
        [
            mmd2_unbiased(a[ia], b[ib])
            for ia, ib in kid_subset_indices(a.shape[0], b.shape[0], subsets, subset_size, seed)
        ]
    )
    return float(mmds.mean()), float(mmds.std())
