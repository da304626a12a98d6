"""Latent-space tools: manifold grid, encoder means, PCA, interpolations."""

from __future__ import annotations

import torch
from torch import Tensor

from dgm_ext.vae.model import VAE

__all__ = [
    "different_class_pairs",
    "encode_means",
    "interpolate",
    "manifold_grid",
    "manifold_images",
    "pca",
]


def manifold_grid(n: int = 20, lo: float = 0.05, hi: float = 0.95) -> Tensor:
    """``(n*n, 2)`` latent points: Gaussian quantiles of ``linspace(lo, hi, n)`` per axis.

    Row-major: entry ``i*n + j`` is ``(q_j, q_{n-1-i})`` so that, drawn as an image grid,
    z1 grows to the right and z2 grows upwards.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if not 0.0 < lo < hi < 1.0:
        raise ValueError(f"need 0 < lo < hi < 1, got lo={lo}, hi={hi}")
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(lo, hi, n, dtype=torch.float64))
    z1 = q.repeat(n)
    z2 = q.flip(0).repeat_interleave(n)
    return torch.stack([z1, z2], dim=1).float()


@torch.no_grad()
def manifold_images(
    model: VAE,
    n: int = 20,
    lo: float = 0.05,
    hi: float = 0.95,
    labels: int | Tensor | None = None,
) -> Tensor:
    """Decoder means on the ``manifold_grid``; needs ``latent_dim == 2``. A class-conditional
    VAE decodes the grid for ``labels`` (an int: one class; see ``VAE.sample``)."""
    if model.latent_dim != 2:
        raise ValueError(f"model: the manifold plot needs latent_dim 2, got {model.latent_dim}")
    return model.sample(z=manifold_grid(n, lo, hi), labels=labels)


@torch.no_grad()
def encode_means(
    model: VAE, images: Tensor, batch_size: int = 1000, labels: Tensor | None = None
) -> Tensor:
    """Encoder means ``(N, L)`` (of q(z | x, y) with the images' ``labels``, if conditional)."""
    out = [
        model.encode(
            images[i : i + batch_size], None if labels is None else labels[i : i + batch_size]
        )[0]
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).cpu()


def pca(x: Tensor, k: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """Project ``x`` (N, L) on its first ``k`` principal components.

    Returns ``(projection (N, k), components (k, L), explained variance ratio (k,))``.
    """
    if x.ndim != 2 or k < 1 or k > min(x.shape):
        raise ValueError(f"x must be (N, L) with k <= min(N, L); got shape {tuple(x.shape)}, k={k}")
    xc = x.double() - x.double().mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)
    var = s**2
    comps = vh[:k]
    return (xc @ comps.T).float(), comps.float(), (var[:k] / var.sum()).float()


@torch.no_grad()
def interpolate(model: VAE, image_a: Tensor, image_b: Tensor, steps: int = 10) -> Tensor:
    """Decoder means along the straight line between two encoder means, ``(steps, 1, 28, 28)``."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    mu, _, _ = model.encode(torch.stack([image_a, image_b]))
    t = torch.linspace(0.0, 1.0, steps, device=mu.device)[:, None]
    return model.sample(z=(1 - t) * mu[0] + t * mu[1])


def different_class_pairs(labels: Tensor, n_pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n_pairs`` index pairs whose labels differ (reproducible with ``seed``)."""
    if len(torch.unique(labels)) < 2:
        raise ValueError("labels: need at least two classes to form pairs")
    g = torch.Generator().manual_seed(seed)
    pairs: list[tuple[int, int]] = []
    while len(pairs) < n_pairs:
        i, j = torch.randint(len(labels), (2,), generator=g).tolist()
        if labels[i] != labels[j]:
            pairs.append((i, j))
    return pairs
