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
