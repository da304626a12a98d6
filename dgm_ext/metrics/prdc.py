"""Precision, recall, density and coverage of generated features against real ones.

With real features R (n, F), generated features G (m, F), Euclidean distances d and the
k-nearest-neighbour radius r(x) of a point in its own set (distance to its k-th nearest
neighbour, itself not counted):

* precision (Kynkäänniemi et al. 2019): fraction of g in G with d(g, x) <= r(x) for some x in R
  (g lies in the real manifold, a union of k-NN balls);
* recall (same paper): fraction of x in R with d(x, g) <= r(g) for some g in G;
* density (Naeem et al. 2020): (1 / (k m)) * number of pairs (x, g) with d(x, g) < r(x);
  about 1 when G matches R, above 1 when G crowds into dense real regions;
* coverage (same paper): fraction of x in R whose nearest g is closer than r(x).

The comparisons are those of the authors' code: ``<=`` in Kynkäänniemi et al.'s
(NVlabs ``precision_recall.py``), ``<`` in Naeem et al.'s ``prdc`` package. Default k = 3.
Distances are computed in float64 in row blocks, so memory stays at ``block`` x (n or m)
whatever the set sizes (n = m = 50 000: 100 MB per block of 256 rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["knn_radii", "prdc"]

_BLOCK = 256


def _check(x: Any, name: str) -> torch.Tensor:
    a = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    if a.dim() != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name} must be 2-D (samples, features), got shape {tuple(a.shape)}")
    return a.detach().cpu()


def _sq_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(1)


def _distances(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between rows of ``a`` (float64 block) and ``b`` (float64)."""
    d2 = _sq_norms(a)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_(min=0.0).sqrt_()


def _blocks(x: torch.Tensor, block: int):
    for i in range(0, x.shape[0], block):
        yield i, x[i : i + block].double()


def knn_radii(features: Any, k: int = 3, block: int = _BLOCK) -> np.ndarray:
    """Distance of each row of ``features`` (n, F) to its k-th nearest other row, float64.
    Needs n > k."""
    x = _check(features, "features")
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if n <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} samples, got {n}")
    xd = x.double()
    sq = _sq_norms(xd)
    out = torch.empty(n, dtype=torch.float64)
    for i, a in _blocks(x, block):
        d = _distances(a, xd, sq)
        # the row's own distance is 0 (up to round-off): the (k+1)-th smallest is the k-th
        # neighbour; set it exactly so round-off cannot put it elsewhere
        rows = torch.arange(a.shape[0])
        d[rows, i + rows] = -1.0
        out[i : i + a.shape[0]] = torch.kthvalue(d, k + 1, dim=1).values
    return out.numpy()


def prdc(real: Any, fake: Any, k: int = 3, block: int = _BLOCK) -> dict[str, float]:
    """``{"precision", "recall", "density", "coverage"}`` of ``fake`` (m, F) against ``real``
    (n, F) with k-NN radii (see the module docstring); both need more than ``k`` rows."""
    r = _check(real, "real")
    g = _check(fake, "fake")
    if r.shape[1] != g.shape[1]:
        raise ValueError(
            f"real and fake features have different widths: {r.shape[1]} and {g.shape[1]}"
        )
    for name, t in (("real", r), ("fake", g)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} features contain NaN or Inf")
    radius_r = torch.from_numpy(knn_radii(r, k, block))
    radius_g = torch.from_numpy(knn_radii(g, k, block))
    gd = g.double()
    g_sq = _sq_norms(gd)
    fake_in_real = torch.zeros(g.shape[0], dtype=torch.bool)  # precision
    real_in_fake = torch.zeros(r.shape[0], dtype=torch.bool)  # recall
    density_count = torch.zeros(g.shape[0], dtype=torch.float64)
    covered = torch.zeros(r.shape[0], dtype=torch.bool)
    for i, a in _blocks(r, block):
        d = _distances(a, gd, g_sq)  # (block of real, fake)
        rad = radius_r[i : i + a.shape[0], None]
        fake_in_real |= (d <= rad).any(0)
        real_in_fake[i : i + a.shape[0]] = (d <= radius_g[None, :]).any(1)
        density_count += (d < rad).sum(0, dtype=torch.float64)
        covered[i : i + a.shape[0]] = d.min(1).values < rad[:, 0]
    return {
        "precision": float(fake_in_real.double().mean()),
        "recall": float(real_in_fake.double().mean()),
        "density": float(density_count.sum() / (k * g.shape[0])),
        "coverage": float(covered.double().mean()),
    }
