"""pytest-benchmark timings of the Fréchet distance (dgm_ext.metrics) on FID-sized inputs:
10 000 × 2048 float32 features per set (Inception-v3 pool width), CPU.

    pytest benchmarks/bench_metrics.py --benchmark-json=benchmarks/metrics.json

Two groups, each with the code a user would otherwise write (pytorch-fid) as the baseline:

* ``fd statistics``: mean and covariance of one feature set, ``feature_statistics`` (float64,
  ddof=1) vs pytorch-fid's ``np.mean`` / ``np.cov(act, rowvar=False)``.
* ``fd distance``: the distance from two ``(mu, sigma)`` pairs, ``frechet_distance_from_stats``
  (symmetric eigendecompositions) vs pytorch-fid's ``calculate_frechet_distance``
  (``scipy.linalg.sqrtm(sigma1 @ sigma2)``). Before timing, both values are checked to agree.

DGM_EXT_BENCH_QUICK=1 shrinks the sizes (CI smoke run).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.linalg

from dgm_ext.metrics.frechet import frechet_distance_from_stats
from dgm_ext.metrics.stats import feature_statistics

QUICK = os.environ.get("DGM_EXT_BENCH_QUICK", "0") not in ("", "0")
N, F = (1000, 128) if QUICK else (10_000, 2048)
ROUNDS = 3 if QUICK else 5


def _features(seed: int, shift: float) -> np.ndarray:
    """Non-negative, correlated float32 features (N, F), like post-ReLU pooled activations."""
    rng = np.random.default_rng(seed)
    low_rank = rng.standard_normal((N, 32)) @ rng.standard_normal((32, F)) / 8
    return (np.abs(rng.standard_normal((N, F)) + low_rank) + shift).astype(np.float32)


@pytest.fixture(scope="module")
def features() -> tuple[np.ndarray, np.ndarray]:
    return _features(0, 0.0), _features(1, 0.05)


@pytest.fixture(scope="module")
def stats(features):
    return feature_statistics(features[0]), feature_statistics(features[1])


def _pytorch_fid_statistics(act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-fid's calculate_activation_statistics, after the network."""
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


def _pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps=1e-6) -> float:
    """pytorch-fid's calculate_frechet_distance (sqrtm of the non-symmetric product, a diagonal
    offset when it is singular, imaginary parts dropped)."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _info(benchmark, group: str, provider: str) -> None:
    benchmark.group = f"fd {group} | {N}x{F}"
    benchmark.extra_info.update(provider=provider, n=N, features=F, quick=QUICK, device="cpu")


@pytest.mark.parametrize("provider", ["dgm_ext", "pytorch-fid"])
def test_fd_statistics(benchmark, features, provider):
    fn = feature_statistics if provider == "dgm_ext" else _pytorch_fid_statistics
    _info(benchmark, "statistics", provider)
    mu, sigma = benchmark.pedantic(
        fn, args=(features[0],), rounds=ROUNDS, iterations=1, warmup_rounds=1
    )
    assert mu.shape == (F,) and sigma.shape == (F, F)


@pytest.mark.parametrize("provider", ["dgm_ext", "scipy-sqrtm"])
def test_fd_distance(benchmark, stats, provider):
    (mu1, s1), (mu2, s2) = stats
    fn = frechet_distance_from_stats if provider == "dgm_ext" else _pytorch_fid_distance
    if provider == "dgm_ext":  # agreement with the baseline, outside the timed rounds
        expected = _pytorch_fid_distance(mu1, s1, mu2, s2)
        assert fn(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    _info(benchmark, "distance", provider)
    value = benchmark.pedantic(
        fn, args=(mu1, s1, mu2, s2), rounds=ROUNDS, iterations=1, warmup_rounds=1
    )
    benchmark.extra_info["fd"] = value
    assert np.isfinite(value) and value > 0
