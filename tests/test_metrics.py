"""Tests of dgm_ext.metrics.{frechet,scores,stats}: each value is checked against an independent
computation (scipy.linalg.sqrtm, closed forms, SVDs, hand-computed scores, O(N²) loops)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from dgm_ext.metrics.frechet import (
    frechet_distance,
    frechet_distance_from_stats,
    trace_sqrt_product,
)
from dgm_ext.metrics.scores import (
    inception_score,
    kernel_inception_distance,
    kid_subset_indices,
    mmd2_unbiased,
)
from dgm_ext.metrics.stats import feature_statistics, load_stats, save_stats


def _features(n, f, seed, shift=0.0, mix=True):
    """Correlated Gaussian-ish features (n, f)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, f))
    if mix:
        x = x @ (np.eye(f) + 0.3 * rng.standard_normal((f, f)) / math.sqrt(f))
    return x + shift


def _fd_sqrtm(a, b):
    """pytorch-fid's formula with scipy.linalg.sqrtm, statistics by np.cov (independent path)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    assert np.abs(covmean.imag).max() < 1e-8 if np.iscomplexobj(covmean) else True
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def _trace_sqrt_svd(a, b):
    """Tr √(Σ₁Σ₂) independently of any matrix square root: with Σ₁ = AAᵀ, Σ₂ = BBᵀ
    (A = centred aᵀ/√(n−1)), the nonzero eigenvalues of Σ₁Σ₂ = A(AᵀBBᵀA)A⁻ are those of
    (AᵀB)(AᵀB)ᵀ, so the trace is the sum of the singular values of AᵀB (nuclear norm)."""
    A = (a - a.mean(0)).T / math.sqrt(a.shape[0] - 1)
    B = (b - b.mean(0)).T / math.sqrt(b.shape[0] - 1)
    return float(np.linalg.svd(A.T @ B, compute_uv=False).sum())


def _fd_svd(a, b):
    d = a.mean(0) - b.mean(0)
    tr = (a.var(0, ddof=1)).sum() + (b.var(0, ddof=1)).sum()
    return float(d @ d + tr - 2 * _trace_sqrt_svd(a, b))


# ----------------------------------------------------------------------------- statistics


def test_feature_statistics_match_numpy_cov_ddof1():
    x = _features(50, 7, 0)
    mu, sigma = feature_statistics(torch.from_numpy(x))
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, ddof=1), rtol=1e-12, atol=1e-14)
    assert np.array_equal(sigma, sigma.T)


# ----------------------------------------------------------------------------- Fréchet


def test_fd_matches_scipy_sqrtm():
    a = _features(400, 24, 1)
    b = _features(300, 24, 2, shift=0.2)
    expected = _fd_sqrtm(a, b)
    got = frechet_distance(a, b)
    assert got == pytest.approx(expected, rel=1e-6)
    assert got == pytest.approx(_fd_svd(a, b), rel=1e-9)


def test_fd_self_is_zero_and_symmetric():
    a = _features(200, 16, 3)
    b = _features(150, 16, 4, shift=0.5)
    assert abs(frechet_distance(a, a)) < 1e-10
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-10)


def test_fd_closed_form_diagonal_gaussians():
    rng = np.random.default_rng(5)
    f = 10
    mu1, mu2 = rng.standard_normal(f), rng.standard_normal(f)
    v1, v2 = rng.uniform(0.1, 3.0, f), rng.uniform(0.1, 3.0, f)
    v1[:2] = 0.0  # singular: two degenerate directions
    expected = float(((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum())
    got = frechet_distance_from_stats(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-12)
    # the same through the (mu, sigma) tuple form of frechet_distance
    assert frechet_distance((mu1, np.diag(v1)), (mu2, np.diag(v2))) == pytest.approx(
        expected, rel=1e-12
    )


def test_fd_closed_form_scaled_covariance():
    # Σ₂ = c²Σ₁ commutes with Σ₁: Tr √(Σ₁Σ₂) = c·Tr Σ₁, FD = ‖Δμ‖² + (1 − c)² Tr Σ₁.
    _, s1 = feature_statistics(_features(100, 12, 6))
    c = 1.7
    mu1, mu2 = np.zeros(12), np.full(12, 0.25)
    expected = 12 * 0.25**2 + (1 - c) ** 2 * np.trace(s1)
    got = frechet_distance_from_stats(mu1, s1, mu2, c**2 * s1)
    assert got == pytest.approx(expected, rel=1e-10)
    assert trace_sqrt_product(s1, c**2 * s1) == pytest.approx(c * np.trace(s1), rel=1e-12)


@pytest.mark.parametrize("n_a,n_b,f", [(10, 12, 40), (30, 25, 64)])
def test_fd_fewer_samples_than_features(n_a, n_b, f):
    a = _features(n_a, f, 7)
    b = _features(n_b, f, 8, shift=0.1)
    got = frechet_distance(a, b)
    assert np.isfinite(got) and got >= 0
    # independent: nuclear norm of AᵀB ...
    assert got == pytest.approx(_fd_svd(a, b), rel=1e-8)
    # ... and the eigenvalues of the non-symmetric product Σ₁Σ₂ (real parts, clipped at the
    # rank tolerance: its zero eigenvalues come out as ±1e-16·λ_max round-off)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    lam = scipy.linalg.eigvals(s1 @ s2).real
    lam = lam[lam > f * np.finfo(float).eps * lam.max()]
    tr = float(np.sqrt(lam).sum())
    d = a.mean(0) - b.mean(0)
    expected = float(d @ d + np.trace(s1) + np.trace(s2) - 2 * tr)
    assert got == pytest.approx(expected, rel=1e-7)
    # FD(a, a) with a rank-deficient covariance is (round-off) zero, never NaN
    self_fd = frechet_distance(a, a)
    assert np.isfinite(self_fd) and 0.0 <= self_fd < 1e-9 * np.trace(s1)


def test_fd_singular_covariance_duplicated_features():
    a = _features(200, 10, 9)
    b = _features(180, 10, 10, shift=0.3)
    a = np.concatenate([a, a[:, :4], 2 * a[:, :1]], axis=1)  # 15 columns, rank 10
    b = np.concatenate([b, b[:, :4], 2 * b[:, :1]], axis=1)
    got = frechet_distance(a, b)
    assert np.isfinite(got) and got > 0
    assert got == pytest.approx(_fd_svd(a, b), rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fd_tensor_and_array_agree():
    a = _features(120, 8, 11).astype(np.float32)
    b = _features(100, 8, 12, shift=0.2).astype(np.float32)
    ref = frechet_distance(a, b)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
        ref, rel=1e-12
    )
    assert frechet_distance(torch.from_numpy(a), b) == pytest.approx(ref, rel=1e-12)
    stats_a = feature_statistics(torch.from_numpy(a))
    assert frechet_distance(stats_a, b) == pytest.approx(ref, rel=1e-12)
    tstats = tuple(torch.from_numpy(s) for s in stats_a)
    assert frechet_distance(tstats, torch.from_numpy(b)) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize(
    "a,b,match",
    [
        (np.zeros(5), np.zeros((5, 3)), "features_a must be 2-D"),
        (np.zeros((5, 3)), np.zeros((5, 4)), "different feature widths"),
        (np.zeros((1, 3)), np.zeros((5, 3)), "features_a needs at least 2 samples"),
        (np.zeros((5, 3)), np.full((5, 3), np.nan), "features_b contains NaN"),
        (np.zeros((5, 3)), np.zeros((5, 3), dtype=complex), "features_b must be a real"),
    ],
)
def test_fd_bad_features_raise(a, b, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(a, b)


def test_fd_bad_stats_raise():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="sigma2 must have shape"):
        frechet_distance_from_stats(mu, s, mu, np.eye(4))
    with pytest.raises(ValueError, match="different feature widths"):
        frechet_distance_from_stats(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="mu1 must be 1-D"):
        frechet_distance_from_stats(np.zeros((3, 1)), s, mu, s)
    with pytest.raises(ValueError, match="sigma1 is not symmetric"):
        frechet_distance_from_stats(mu, np.triu(np.ones((3, 3))), mu, s)
    with pytest.raises(ValueError, match="sigma2 is not positive semi-definite"):
        frechet_distance_from_stats(mu, s, mu, np.diag([1.0, 1.0, -0.5]))
    with pytest.raises(ValueError, match="sigma1 contains NaN"):
        frechet_distance_from_stats(mu, np.full((3, 3), np.nan), mu, s)


def test_fd_negative_clipped_only_within_round_off(monkeypatch):
    import dgm_ext.metrics.frechet as fr

    mu, s = np.zeros(4), np.diag([1.0, 2.0, 3.0, 4.0])
    exact = fr._trace_sqrt  # Tr √(ΣΣ) = Tr Σ = 10, so FD = 0 up to what the trace adds
    monkeypatch.setattr(fr, "_trace_sqrt", lambda *a: exact(*a) + 1e-12)
    assert frechet_distance_from_stats(mu, s, mu, s) == 0.0  # round-off: clipped
    monkeypatch.setattr(fr, "_trace_sqrt", lambda *a: exact(*a) + 0.1)
    with pytest.raises(ArithmeticError, match="negative"):
        frechet_distance_from_stats(mu, s, mu, s)


# ----------------------------------------------------------------------------- Inception Score


def test_is_one_hot_uniform_gives_num_classes():
    c, splits = 7, 3
    labels = np.arange(c * splits * 4) % c  # every split holds each class 4 times
    probs = np.eye(c)[labels]
    mean, std = inception_score(probs, splits=splits)
    assert mean == pytest.approx(c, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_is_identical_rows_gives_one():
    probs = np.tile(np.array([0.1, 0.0, 0.6, 0.3]), (20, 1))
    mean, std = inception_score(torch.from_numpy(probs).float(), splits=4)
    assert mean == pytest.approx(1.0, abs=1e-7) and std == pytest.approx(0.0, abs=1e-7)


def test_is_two_template_mixture_by_hand():
    p, q = np.array([0.9, 0.1]), np.array([0.2, 0.8])
    # split 0: 4 rows p; split 1: 1 row p, 3 rows q; split 2: 2 p, 2 q (order within a split
    # does not matter, across splits it does)
    rows = [p] * 4 + [p, q, q, q] + [q, p, q, p]
    # hand computation, split 1: p_y = (0.9 + 3·0.2, 0.1 + 3·0.8)/4 = (0.375, 0.625)
    kl_p1 = 0.9 * math.log(0.9 / 0.375) + 0.1 * math.log(0.1 / 0.625)
    kl_q1 = 0.2 * math.log(0.2 / 0.375) + 0.8 * math.log(0.8 / 0.625)
    is1 = math.exp((kl_p1 + 3 * kl_q1) / 4)
    # split 2: p_y = (0.55, 0.45)
    kl_p2 = 0.9 * math.log(0.9 / 0.55) + 0.1 * math.log(0.1 / 0.45)
    kl_q2 = 0.2 * math.log(0.2 / 0.55) + 0.8 * math.log(0.8 / 0.45)
    is2 = math.exp((kl_p2 + kl_q2) / 2)
    scores = [1.0, is1, is2]
    mean_exp = sum(scores) / 3
    std_exp = math.sqrt(sum((s - mean_exp) ** 2 for s in scores) / 3)  # ddof = 0
    mean, std = inception_score(np.array(rows), splits=3)
    assert mean == pytest.approx(mean_exp, rel=1e-12)
    assert std == pytest.approx(std_exp, rel=1e-10)


def test_is_split_boundaries_and_zero_probabilities():
    # N = 5, splits = 2: chunks rows [0:2] and [2:5] (i·N//splits), not np.array_split's [0:3].
    e = np.eye(3)
    rows = np.array([e[0], e[1], e[2], e[0], e[0]])
    mean, std = inception_score(rows, splits=2)
    # split 0: two distinct one-hots -> 2 (np.array_split would give rows 0..2 -> 3, then 1);
    # split 1: p_y = (2/3, 0, 1/3), one-hot KLs log(3/2) (twice) and log 3
    is1 = math.exp((2 * math.log(1.5) + math.log(3.0)) / 3)
    assert mean == pytest.approx((2 + is1) / 2, rel=1e-12)
    assert std == pytest.approx(abs(2 - is1) / 2, rel=1e-12)


@pytest.mark.parametrize(
    "probs,splits,match",
    [
        (np.full(4, 0.25), 1, "2-D"),
        (np.full((4, 2), 0.5), 5, "fewer than splits"),
        (np.full((4, 2), 0.5), 0, "positive integer"),
        (np.array([[1.5, -0.5], [0.5, 0.5]]), 1, "non-negative"),
        (np.array([[0.5, 0.4], [0.5, 0.5]]), 1, "row 0 sums to"),
        (np.array([[np.nan, 0.5], [0.5, 0.5]]), 1, "NaN"),
    ],
)
def test_is_bad_inputs_raise(probs, splits, match):
    with pytest.raises(ValueError, match=match):
        inception_score(probs, splits=splits)


# ----------------------------------------------------------------------------- KID


def _mmd2_loop(x, y):
    """Unbiased MMD² by explicit loops over pairs, k(a, b) = (a·b/d + 1)³."""
    d = x.shape[1]

    def k(u, v):
        return (float(np.dot(u, v)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_all_data_matches_loop():
    a = _features(12, 5, 13)
    b = _features(12, 5, 14, shift=0.4)
    expected = _mmd2_loop(a, b)
    mean, std = kernel_inception_distance(a, b, subsets=3, subset_size=12)
    assert mean == pytest.approx(expected, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12 * abs(expected))
    assert mmd2_unbiased(a, b) == pytest.approx(expected, rel=1e-12)


def test_kid_subsets_match_loop():
    a = _features(15, 4, 15)
    b = _features(11, 4, 16, shift=0.3)
    subsets, size, seed = 4, 6, 3
    idx = kid_subset_indices(15, 11, subsets, size, seed)
    for ia, ib in idx:
        assert len(set(ia.tolist())) == size and len(set(ib.tolist())) == size
    vals = np.array([_mmd2_loop(a[ia], b[ib]) for ia, ib in idx])
    mean, std = kernel_inception_distance(
        torch.from_numpy(a), b, subsets=subsets, subset_size=size, seed=seed
    )
    assert mean == pytest.approx(vals.mean(), rel=1e-12)
    assert std == pytest.approx(vals.std(ddof=0), rel=1e-10)
    # deterministic given the seed, different for another seed
    assert kernel_inception_distance(a, b, subsets=subsets, subset_size=size, seed=seed) == (
        mean,
        std,
    )
    assert kernel_inception_distance(a, b, subsets, size, seed=seed + 1)[0] != mean


def test_kid_same_distribution_near_zero_and_shift_positive():
    a = _features(2000, 8, 17, mix=False)
    b = _features(2000, 8, 18, mix=False)
    subsets = 50
    mean, std = kernel_inception_distance(a, b, subsets=subsets, subset_size=100, seed=0)
    assert abs(mean) < 4 * std / math.sqrt(subsets)
    c = _features(2000, 8, 19, shift=0.5, mix=False)
    mean_c, std_c = kernel_inception_distance(a, c, subsets=subsets, subset_size=100, seed=0)
    assert mean_c > 10 * std_c / math.sqrt(subsets)


def test_kid_subset_size_capped_with_warning():
    a = _features(9, 3, 20)
    b = _features(7, 3, 21, shift=0.2)
    with pytest.warns(UserWarning, match="using subset_size=7"):
        capped = kernel_inception_distance(a, b, subsets=5, subset_size=1000, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernel_inception_distance(a, b, subsets=5, subset_size=7, seed=1) == capped


@pytest.mark.parametrize(
    "a,b,kw,match",
    [
        (np.zeros((5, 3)), np.zeros((5, 4)), {}, "different feature widths"),
        (np.zeros(5), np.zeros((5, 3)), {}, "features_a must be 2-D"),
        (np.zeros((5, 3)), np.zeros((1, 3)), {}, "features_b needs at least 2"),
        (np.zeros((5, 3)), np.zeros((5, 3)), {"subsets": 0}, "subsets must be"),
        (np.zeros((5, 3)), np.zeros((5, 3)), {"subset_size": 1}, "at least 2"),
    ],
)
def test_kid_bad_inputs_raise(a, b, kw, match):
    with pytest.raises(ValueError, match=match):
        kernel_inception_distance(a, b, **kw)


# ----------------------------------------------------------------------------- stats files


def test_stats_npz_round_trip(tmp_path):
    mu, sigma = feature_statistics(_features(30, 6, 22))
    path = tmp_path / "stats.npz"
    save_stats(path, mu, sigma)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.npz"]  # no temp file left
    with np.load(path) as raw:  # pytorch-fid's reader
        assert sorted(raw.files) == ["mu", "sigma"]
        np.testing.assert_array_equal(raw["mu"], mu)
    mu2, sigma2 = load_stats(path)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    save_stats(path, np.zeros(2), np.eye(2))  # overwrite in place
    assert load_stats(path)[0].shape == (2,)


def test_save_stats_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "stats.npz"
    save_stats(path, np.ones(2), np.eye(2))

    def crash(fh, **arrays):  # a write that dies half-way
        fh.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save_stats(path, np.zeros(3), np.eye(3))
    monkeypatch.undo()
    np.testing.assert_array_equal(load_stats(path)[0], np.ones(2))  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["stats.npz"]  # temp file removed


def test_load_stats_pytorch_fid_layout(tmp_path):
    # pytorch-fid's save_fid_stats: np.savez_compressed(path, mu=m, sigma=s); TTUR files are
    # float32 sometimes and may carry other keys
    x = _features(40, 5, 23)
    m, s = x.mean(0).astype(np.float32), np.cov(x, rowvar=False).astype(np.float32)
    path = tmp_path / "fid_stats.npz"
    np.savez_compressed(path, mu=m, sigma=s, extra=np.arange(3))
    mu, sigma = load_stats(path)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_array_equal(mu, m.astype(np.float64))
    np.testing.assert_array_equal(sigma, s.astype(np.float64))
    assert frechet_distance((mu, sigma), x) == pytest.approx(0.0, abs=1e-5)


def test_stats_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "nomu.npz"
    np.savez(bad, sigma=np.eye(2))
    with pytest.raises(ValueError, match=r"nomu\.npz.*missing key.*'mu'"):
        load_stats(bad)
    mismatch = tmp_path / "mismatch.npz"
    np.savez(mismatch, mu=np.zeros(3), sigma=np.eye(2))
    with pytest.raises(ValueError, match=r"sigma in .*mismatch\.npz must have shape \(3, 3\)"):
        load_stats(mismatch)
    npy = tmp_path / "single.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match=r"single\.npy.*\.npz archive"):
        load_stats(npy)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"junk\.npz"):
        load_stats(junk)
    with pytest.raises(ValueError, match=r"sigma for .*out\.npz must have shape"):
        save_stats(tmp_path / "out.npz", np.zeros(3), np.eye(2))
    assert not (tmp_path / "out.npz").exists()
    with pytest.raises(FileNotFoundError):
        load_stats(tmp_path / "absent.npz")
