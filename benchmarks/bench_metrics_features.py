"""Timing of the MNIST feature pass of ``dgm_ext.metrics`` (the input of FID/KID/IS on MNIST).

    pytest benchmarks/bench_metrics_features.py --benchmark-json=benchmarks/metrics.json

Times :func:`dgm_ext.metrics.mnist_net.features` (``(N, 128)`` float64 features) and
:func:`~dgm_ext.metrics.mnist_net.class_probs` over the 10,000 MNIST test images, batch 500,
on every device of ``cases.DEVICES``. The net has the default architecture
(``TrainConfig()``) with untrained, seeded weights: the cost of a forward pass does not depend
on the weights, and the benchmark never trains (or needs the cached) classifier.
Uses the MNIST test images from ``$DGM_EXT_DATA``; without them (``DatasetNotFoundError``) it
warns and times random images, recorded as ``extra_info["data"] == "random"``.
DGM_EXT_BENCH_QUICK=1 (CI smoke run) times 500 images, 2 rounds.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from cases import DEVICES, QUICK, device_name

from dgm_ext.data import DatasetNotFoundError, load_mnist
from dgm_ext.metrics.mnist_net import FeatureNet, TrainConfig, class_probs, features

N_IMAGES = 500 if QUICK else 10_000
BATCH = 500


def _images() -> tuple[torch.Tensor, str]:
    try:
        return load_mnist("test", download=False).images[:N_IMAGES], "mnist"
    except DatasetNotFoundError as exc:
        msg = f"bench_metrics_features: MNIST not found, timing RANDOM images instead: {exc}"
        print(f"WARNING: {msg}", file=sys.stderr)
        warnings.warn(msg, stacklevel=1)
        g = torch.Generator().manual_seed(0)
        return torch.rand(N_IMAGES, 1, 28, 28, generator=g), "random"


IMAGES, DATA_SOURCE = _images()


def _net(device: str) -> FeatureNet:
    cfg = TrainConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = FeatureNet(cfg.width, cfg.channels, cfg.kernel)
    return net.eval().requires_grad_(False).to(device)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


@pytest.mark.parametrize("kind", ["features", "probs"])
@pytest.mark.parametrize("device", DEVICES)
def test_mnist_feature_pass(benchmark, device: str, kind: str) -> None:
    net = _net(device)
    images = IMAGES.to(device)
    fn = features if kind == "features" else class_probs

    def run() -> torch.Tensor:
        out = fn(net, images, batch_size=BATCH)
        _sync(device)
        return out

    name = f"mnist feature net | {N_IMAGES} images, batch {BATCH}"
    benchmark.group = name if device == "cpu" else f"{name} | {device}"
    benchmark.extra_info.update(
        kind=kind, device=device, device_name=device_name(device), data=DATA_SOURCE,
        quick=QUICK, n_images=N_IMAGES, batch=BATCH, width=net.width,
    )  # fmt: skip
    out = benchmark.pedantic(run, rounds=2 if QUICK else 5, warmup_rounds=1)
    width = net.width if kind == "features" else 10
    assert out.shape == (N_IMAGES, width) and out.dtype == torch.float64
    assert torch.isfinite(out).all()
