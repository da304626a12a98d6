"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020):
a case worked out by hand, and a brute-force implementation written here (Python loops over
every pair, ``math.dist``, neighbours by sorting)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dgm_ext.metrics.prdc import knn_radii, prdc


def brute_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    def radii(x):
        return [sorted(math.dist(a, b) for j, b in enumerate(x) if j != i)[k - 1]
                for i, a in enumerate(x)]  # fmt: skip

    rr, rf = radii(real), radii(fake)
    d = [[math.dist(x, g) for g in fake] for x in real]
    n, m = len(real), len(fake)
    precision = sum(any(d[i][j] <= rr[i] for i in range(n)) for j in range(m)) / m
    recall = sum(any(d[i][j] <= rf[j] for j in range(m)) for i in range(n)) / n
    density = sum(d[i][j] < rr[i] for i in range(n) for j in range(m)) / (k * m)
    coverage = sum(min(d[i]) < rr[i] for i in range(n)) / n
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_hand_computed_case_with_ties():
    # 1-D, k = 1. Real radii: r(0) = 1, r(1) = 1, r(3) = 2, r(10) = 7; fake radii: 2.1, 2.1, 3, 3.
    # precision: 0.5 (|0.5-0| <= 1), 2.6 (|2.6-3| <= 2), 17 (|17-10| = 7 <= 7, a tie: counted);
    #   20 is out                                                                  -> 3/4
    # recall: 0, 1, 3 are within 2.1 of 0.5 or 2.6; 10 is 7 from 17 (radius 3)     -> 3/4
    # density: pairs d(x, g) < r(x): (0, 0.5), (1, 0.5), (3, 2.6); (10, 17) is a tie,
    #   not counted                                                  -> 3 / (1 * 4) = 3/4
    # coverage: nearest fakes of 0, 1, 3 are inside their radii; of 10 (17, at 7 = r) not -> 3/4
    real = np.array([[0.0], [1.0], [3.0], [10.0]])
    fake = np.array([[0.5], [2.6], [20.0], [17.0]])
    np.testing.assert_allclose(knn_radii(real, k=1), [1, 1, 2, 7])
    np.testing.assert_allclose(knn_radii(fake, k=1), [2.1, 2.1, 3, 3])
    res = prdc(real, fake, k=1)
    assert res == {"precision": 0.75, "recall": 0.75, "density": 0.75, "coverage": 0.75}
    # 2-D, k = 2: real on a unit square's corners (radius 1: the 2nd neighbour is at 1),
    # fake = the corners themselves plus a far point.
    sq = np.array([[0.0, 0], [1, 0], [0, 1], [1, 1]])
    res = prdc(sq, np.vstack([sq, [[5.0, 5.0]]]), k=2)
    assert res["precision"] == 0.8 and res["recall"] == 1.0 and res["coverage"] == 1.0
    # density: each corner fake lies within radius 1 (strictly) of itself only: 4 / (2 * 5)
    assert res["density"] == pytest.approx(0.4)


@pytest.mark.parametrize(("k", "block"), [(3, 256), (3, 7), (5, 16)])
def test_against_brute_force(k, block):
    rng = np.random.default_rng(k + block)
    real = rng.normal(size=(40, 5))
    fake = rng.normal(size=(35, 5)) * 1.3 + 0.4
    got = prdc(real, fake, k=k, block=block)
    want = brute_prdc(real.tolist(), fake.tolist(), k)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-12), name
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1  # not a trivial case


def test_identical_sets_and_errors():
    x = np.random.default_rng(3).normal(size=(20, 4))
    res = prdc(x, x, k=3)
    assert res["precision"] == res["recall"] == res["coverage"] == 1.0
    with pytest.raises(ValueError, match="more than 3 samples"):
        prdc(x[:3], x, k=3)
    with pytest.raises(ValueError, match="different widths"):
        prdc(x, x[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        prdc(np.full((5, 2), np.nan), x[:, :2], k=1)
