"""A class-conditional model's training cost against the unconditional one (issue 25).

    pytest benchmarks/bench_conditional.py --benchmark-json=run1.json
    python benchmarks/repeats.py run1.json run2.json run3.json --subject conditional

Same settings in both providers, only ``num_classes`` differs (10: the one-hot label into the
VAE's encoder and decoder; conditional BatchNorm in the GAN's generator and the projection
critic); both run the same fused ops. One round is one Trainer epoch over the first MNIST
training images (``bench_loop``'s harness: progress bar, NaN guard, metrics, a checkpoint per
epoch, each round continuing the run):

* VAE: vae-mlp's 784-500-20, Bernoulli decoder, statically binarised images, batch 128;
* GAN: gan-mnist's MLP GAN, non-saturating JSD, batch 64, grey images;
* RealNVP: conditional-mnist's MLP RealNVP (8 couplings, width 512, one-hot label as the
  context of every coupling net), batch 128, 8-bit levels, gradient norm clipped at 5.

The issue's target: a conditional step within 10 % of the unconditional one, i.e. the
same-run ratio ``median(unconditional) / median(conditional)`` >= 0.9.
"""

from __future__ import annotations

import pytest
import torch
from bench_loop import QUICK, _images, _info, _trainer_rounds

from dgm_ext.flows.realnvp import build_realnvp
from dgm_ext.gan.gan import GAN, GANConfig
from dgm_ext.vae import build_vae

PROVIDERS = ["unconditional", "conditional"]
VAE_IMAGES = 1024 if QUICK else 10_240  # 80 steps of 128
GAN_IMAGES = 512 if QUICK else 6400  # 100 steps of 64
FLOW_IMAGES = 256 if QUICK else 2560  # 20 steps of 128
ROUNDS = 2 if QUICK else 5


def _labelled(variant: str, n: int):
    from dgm_ext.data import load_mnist

    images = _images(variant, n)
    labels = load_mnist("train", variant, download=False).labels[:n].clone()
    return images, labels


def _epochs(
    benchmark, provider: str, variant: str, n: int, group: str, build, metric: str, **config
) -> None:
    """Time ``ROUNDS`` Trainer epochs of ``build(num_classes)`` on the first ``n`` labelled
    MNIST images of ``variant`` (10 classes for the conditional provider, 0 otherwise)."""
    images, labels = _labelled(variant, n)
    benchmark.group = f"conditional {group}, {n} images"
    _info(benchmark, provider)
    torch.manual_seed(0)
    model = build(10 if provider == "conditional" else 0)
    rows = _trainer_rounds(benchmark, model, images, variant, ROUNDS, labels=labels, **config)
    assert torch.isfinite(torch.tensor(rows[-1][metric]))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_vae_epoch(benchmark, provider: str) -> None:
    _epochs(benchmark, provider, "static", VAE_IMAGES, "vae epoch | 784-500-20, batch 128",
            lambda k: build_vae(arch="mlp", latent_dim=20, hidden=500, num_classes=k),
            "train_loss", batch_size=128)  # fmt: skip


@pytest.mark.parametrize("provider", PROVIDERS)
def test_gan_epoch(benchmark, provider: str) -> None:
    _epochs(benchmark, provider, "grey", GAN_IMAGES, "gan epoch | mlp, batch 64",
            lambda k: GAN(GANConfig(arch="mlp", image_shape=(1, 28, 28), num_classes=k)),
            "train_generator_loss", batch_size=64)  # fmt: skip


@pytest.mark.parametrize("provider", PROVIDERS)
def test_realnvp_epoch(benchmark, provider: str) -> None:
    _epochs(benchmark, provider, "levels", FLOW_IMAGES, "realnvp epoch | mlp width 512, batch 128",
            lambda k: build_realnvp(arch="mlp", couplings=8, hidden=512, num_classes=k),
            "train_loss", batch_size=128, grad_clip=5.0)  # fmt: skip
