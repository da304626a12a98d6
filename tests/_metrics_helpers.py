"""A stand-in feature network for the metrics and GAN CLI tests: fixed random projections, so
every number can be recomputed independently (the real networks have their own tests)."""

from __future__ import annotations

import torch

from dgm_ext.metrics import evaluate as ev


def projection_space(name: str, channels: int, width: int = 12) -> ev.FeatureSpace:
    """Features = a fixed random projection of the flattened 28×28 images, class
    probabilities = a softmax of another one (seeded by ``channels``)."""
    g = torch.Generator().manual_seed(channels)
    w = torch.randn(channels * 28 * 28, width, generator=g, dtype=torch.float64)
    v = torch.randn(channels * 28 * 28, 5, generator=g, dtype=torch.float64)

    def extract(x):
        flat = x.reshape(x.shape[0], -1).double()
        return flat @ w, torch.softmax(flat @ v / 10, dim=1)

    return ev.FeatureSpace(name, "projection", width, extract)
