"""dgm_ext.metrics behaviours that mutation testing (tools/mutation.sh, docs/MUTATION.md) found
untested or checked only by fragment: every argument error of the Fréchet distance, the
Inception Score, KID and the feature checks, compared whole (the message names the argument,
its shape or value, and the rule)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgm_ext.metrics import frechet, scores, stats

EYE2 = np.eye(2)
FEATS = np.arange(12.0).reshape(4, 3) ** 1.5


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    return str(err.value)


def test_trace_sqrt_product_messages() -> None:
    tsp = frechet.trace_sqrt_product
    assert _message(tsp, np.ones(3), EYE2) == "sigma1 must be a square 2-D matrix, got shape (3,)"
    assert (
        _message(tsp, EYE2, np.ones((2, 3)))
        == "sigma2 must be a square 2-D matrix, got shape (2, 3)"
    )
    assert _message(tsp, EYE2, np.eye(3)) == "sigma1 (2, 2) and sigma2 (3, 3) differ in shape"
    assert _message(tsp, EYE2, np.array([[1.0, np.nan], [0, 1]])) == "sigma2 contains NaN or Inf"
    asym = np.array([[1.0, 0.5], [0.0, 1.0]])
    assert _message(tsp, asym, EYE2) == (
        "sigma1 is not symmetric (max |sigma1 - sigma1.T| = 0.5, max |sigma1| = 1); "
        "it must be a covariance matrix"
    )
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues -1 and 3
    assert _message(tsp, EYE2, indefinite) == (
        "sigma2 is not positive semi-definite: smallest eigenvalue -1, largest 3; "
        "it must be a covariance matrix"
    )


def test_frechet_distance_messages() -> None:
    fd = frechet.frechet_distance_from_stats
    assert _message(fd, [np.inf, 0], EYE2, [0, 0], EYE2) == "mu1 contains NaN or Inf"
    assert _message(fd, [0, 0], EYE2, [0, np.nan], EYE2) == "mu2 contains NaN or Inf"
    assert _message(fd, np.zeros((2, 1)), EYE2, [0, 0], EYE2) == (
        "mu1 must be 1-D (features,), got shape (2, 1)"
    )
    assert _message(fd, [0, 0], EYE2, [0, 0], np.eye(3)) == (
        "sigma2 must have shape (2, 2) to match mu of shape (2,), got (3, 3)"
    )
    assert _message(fd, [0, 0, 0], np.eye(3), [0, 0], EYE2) == (
        "the two statistics have different feature widths: mu1 (3,), mu2 (2,)"
    )
    assert _message(frechet.frechet_distance, (np.zeros(3),), FEATS) == (
        "features_a as a tuple must be (mu, sigma), got 1 items"
    )
    assert _message(frechet.frechet_distance, FEATS, FEATS[:, :2]) == (
        "features_a and features_b have different feature widths: 3 and 2"
    )


def test_feature_checks_name_the_argument() -> None:
    ff = frechet.frechet_distance
    assert _message(ff, np.zeros(4), FEATS) == (
        "features_a must be 2-D (samples, features), got shape (4,)"
    )
    assert _message(ff, FEATS, FEATS[:1]) == (
        "features_b needs at least 2 samples for a covariance, got 1"
    )
    assert _message(ff, np.zeros((3, 0)), FEATS) == (
        "features_a has no feature columns (shape (3, 0))"
    )
    bad = FEATS.copy()
    bad[1, 1] = np.inf
    assert _message(ff, FEATS, bad) == "features_b contains NaN or Inf"
    assert _message(ff, torch.zeros(3, 2, dtype=torch.complex64), FEATS) == (
        "features_a must be real, got a complex tensor (torch.complex64)"
    )
    assert _message(stats.check_features, np.array([["a"]]), "x") == (
        "x must be a real numeric array, got dtype <U1"
    )
    assert _message(stats.feature_statistics, np.zeros(3)) == (
        "features must be 2-D (samples, features), got shape (3,)"
    )


def test_inception_score_messages() -> None:
    p = np.full((4, 2), 0.5)
    assert _message(scores.inception_score, p[0]) == (
        "probs must be 2-D (samples, classes), got shape (2,)"
    )
    for splits in (0, 1.0, True):
        assert _message(scores.inception_score, p, splits) == (
            f"splits must be a positive integer, got {splits!r}"
        )
    assert _message(scores.inception_score, p, 5) == "probs has 4 rows, fewer than splits=5"
    assert _message(scores.inception_score, np.array([["a", "b"]])) == (
        "probs must be a real numeric array, got dtype <U1"
    )
    assert _message(scores.inception_score, np.zeros((4, 0)), 2) == "probs has no class columns"
    q = p.copy()
    q[2, 0] = np.nan
    assert _message(scores.inception_score, q, 2) == "probs contains NaN or Inf"
    q[2] = [1.25, -0.25]
    assert _message(scores.inception_score, q, 2) == "probs must be non-negative (min -0.25)"
    q[2] = [0.9, 0.3]
    assert _message(scores.inception_score, q, 2) == (
        f"probs rows must sum to 1 (within {scores.PROBS_SUM_ATOL}): row 2 sums to 1.2; "
        "pass softmax probabilities, not logits"
    )


def test_kid_messages() -> None:
    kid = scores.kernel_inception_distance
    assert _message(kid, FEATS, FEATS[:, :2]) == (
        "features_a and features_b have different feature widths: 3 and 2"
    )
    for value in (0, 2.0, False):
        assert _message(kid, FEATS, FEATS, subsets=value, subset_size=2) == (
            f"subsets must be a positive integer, got {value!r}"
        )
        assert _message(kid, FEATS, FEATS, subsets=1, subset_size=value) == (
            f"subset_size must be a positive integer, got {value!r}"
        )
    assert _message(kid, FEATS, FEATS, subsets=1, subset_size=1) == (
        "subset_size must be at least 2, got 1"
    )
    assert _message(scores.kid_subset_indices, 5, 3, 1, 4) == (
        "subset_size=4 exceeds min(n_a, n_b)=3"
    )


def test_inception_head_probabilities_drop_the_bias() -> None:
    """IS probabilities are softmax(pool3 @ W.T) without the fc bias (as the original IS code
    and torch-fidelity); logits keep it unless told otherwise."""
    from dgm_ext.metrics.inception import FIDInceptionV3

    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    with torch.no_grad():
        net.fc.bias.copy_(torch.randn_like(net.fc.bias) * 5)  # a bias that shows
        x = torch.rand(1, 3, 32, 32)  # one image: each call is a full Inception pass
        pool3 = net.features(x).double()
        w, b = net.fc.weight.double(), net.fc.bias.double()
        want = torch.softmax(pool3 @ w.T, dim=-1)
        torch.testing.assert_close(net.probs(x).double(), want, rtol=1e-4, atol=1e-7)
        feats, probs = net.features_and_probs(x)
        torch.testing.assert_close(probs.double(), want, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(feats.double(), pool3)
        torch.testing.assert_close(net.logits(x).double(), pool3 @ w.T + b, rtol=1e-4, atol=1e-4)


def test_psd_tolerance_is_relative_to_the_largest_eigenvalue() -> None:
    """A covariance may have eigenvalues below 0 by at most 1e-5 × its largest one."""
    tsp = frechet.trace_sqrt_product
    # −1 ≥ −1e-5 · 1e6: accepted; Tr √(Σ₁ I) = √1e6 (the negative direction dropped)
    assert tsp(np.diag([1e6, -1.0]), EYE2) == pytest.approx(1e3, rel=1e-12)
    # −1e-5 < −1e-5 · 0.01: refused, however small in absolute terms
    assert _message(tsp, np.diag([0.01, -1e-5]), EYE2) == (
        "sigma1 is not positive semi-definite: smallest eigenvalue -1e-05, largest 0.01; "
        "it must be a covariance matrix"
    )


def test_negative_frechet_distance_within_round_off_is_zero() -> None:
    """Σ = diag(1e4, −1e-5) for both: exactly FD = 2·Tr Σ − 2·Tr √(Σ Σ) = −2e-5 (√ of the
    negative direction is dropped), inside the round-off bound F·√(F·ε)·s/2 ≈ 4.2e-4 with
    s = 2·Tr Σ: returned as 0. With −1e-2 instead, −0.02 is beyond it and raises."""
    mu = np.zeros(2)
    sigma = np.diag([1e4, -1e-5])
    assert frechet.frechet_distance_from_stats(mu, sigma, mu, sigma) == 0.0
    bad = np.diag([1e4, -1e-2])
    with pytest.raises(ArithmeticError, match=r"^Fréchet distance came out negative \(-0\.02\)"):
        frechet.frechet_distance_from_stats(mu, bad, mu, bad)


def test_stats_checks_name_sigma() -> None:
    fd = frechet.frechet_distance_from_stats
    assert _message(fd, [0.0], [["a"]], [0.0], [[1.0]]) == (
        "sigma1 must be a real numeric array, got dtype <U1"
    )


def test_inception_outputs_argument_errors() -> None:
    """Checked before the network runs (so no network is needed here)."""
    from dgm_ext.metrics.inception import inception_outputs

    with pytest.raises(TypeError) as err:
        inception_outputs(None, [[0.0]])
    assert str(err.value) == "images must be a tensor or numpy array, got list"
    assert _message(inception_outputs, None, torch.zeros(2, 1, 8, 8)) == (
        "expected RGB images of shape (N, 3, H, W), got (2, 1, 8, 8)"
    )
    assert _message(inception_outputs, None, np.zeros((2, 3, 8))) == (
        "expected RGB images of shape (N, 3, H, W), got (2, 3, 8)"
    )
    assert _message(inception_outputs, None, torch.zeros(2, 3, 8, 8), 0) == (
        "batch_size must be >= 1, got 0"
    )
    assert _message(inception_outputs, None, torch.full((1, 3, 2, 2), -1.0)) == (
        "images must be in [0, 1] (got values in [-1, -1]); map samples in [-1, 1] with "
        "(x + 1) / 2, or pass check_range=False"
    )


def test_mnist_classifier_config_bounds() -> None:
    """Width, epochs and batch size of 1 and a 1×1 kernel are the smallest settings; below
    them each is refused naming the setting."""
    from dgm_ext.metrics.mnist_net import TrainConfig

    cfg = TrainConfig(width=1, epochs=1, batch_size=1, kernel=1)
    assert (cfg.width, cfg.epochs, cfg.batch_size, cfg.kernel) == (1, 1, 1, 1)
    for name in ("width", "epochs", "batch_size"):
        assert _message(TrainConfig, **{name: 0}) == f"{name} must be >= 1, got 0"
    for kernel in (0, 4):
        assert _message(TrainConfig, kernel=kernel) == (
            f"kernel must be a positive odd int, got {kernel}"
        )
