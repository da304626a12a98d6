"""End-to-end VAE timings: trainer steps and importance-sampled evaluation, fused vs reference.

    pytest benchmarks/bench_vae_trainer.py --benchmark-json=benchmarks/vae.json

Both providers run the same vae-elbo model (784-300-300-100, Bernoulli, batch 64) on the
same data; ``fused`` uses ``dgm_ext.ops``, ``reference`` uses ``dgm_ext.ops.reference``.
The trainer case times a fixed number of optimiser steps through ``dgm_ext.train.Trainer``
(fresh run directory every round, so no resume); the evaluation case times log p(x) with
K=200 importance samples for 100 images (the 200×100×784 Bernoulli of SPEC §4).
Uses MNIST from ``$DGM_EXT_DATA`` when present, else random binary images (timings only).
DGM_EXT_BENCH_QUICK=1 shrinks every size (CI smoke run).
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

from dgm_ext.train import Trainer, TrainerConfig
from dgm_ext.vae import build_vae, importance_log_likelihood

QUICK = os.environ.get("DGM_EXT_BENCH_QUICK", "0") not in ("", "0")
STEPS = 5 if QUICK else 200
BATCH = 64
N_IS, K_IS = (10, 20) if QUICK else (100, 200)
PROVIDERS = ["fused", "reference"]


def _data():
    from dgm_ext.data import ImageDataset

    n = STEPS * BATCH
    try:
        from dgm_ext.data import load_mnist

        ds = load_mnist("train", "static", download=False)
        return ImageDataset(ds.images[:n], ds.labels[:n], "static")
    except Exception:  # no local MNIST: random binary images are enough for timing
        g = torch.Generator().manual_seed(0)
        images = (torch.rand(n, 1, 28, 28, generator=g) < 0.13).float()
        return ImageDataset(images, torch.zeros(n, dtype=torch.long), "static")


DATA = _data()


def _model(provider: str):
    torch.manual_seed(0)
    return build_vae(
        ops=provider, arch="mlp-deep", latent_dim=100, likelihood="bernoulli", decoder_shift=-5.0
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_vae_trainer_steps(benchmark, provider: str) -> None:
    tmp = tempfile.TemporaryDirectory()
    counter = iter(range(10**6))

    def setup():
        cfg = TrainerConfig(
            run_dir=os.path.join(tmp.name, f"r{next(counter)}"),
            epochs=None,
            max_steps=STEPS,
            batch_size=BATCH,
            lr=3e-4,
            progress=False,
        )
        return (Trainer(_model(provider), cfg),), {}

    def run(trainer):
        return trainer.fit(DATA)

    benchmark.group = f"vae trainer | {STEPS} steps, batch {BATCH}"
    benchmark.extra_info.update(provider=provider, steps=STEPS, batch=BATCH, quick=QUICK)
    rows = benchmark.pedantic(run, setup=setup, rounds=2 if QUICK else 5, warmup_rounds=1)
    assert rows and torch.isfinite(torch.tensor(rows[-1]["train_loss"]))
    tmp.cleanup()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_vae_importance_sampling(benchmark, provider: str) -> None:
    model = _model(provider).eval()
    images = DATA.images[:N_IS]

    def run():
        torch.manual_seed(0)
        return importance_log_likelihood(model, images, k=K_IS)

    benchmark.group = f"vae IS log p(x) | K={K_IS}, {N_IS} images"
    benchmark.extra_info.update(provider=provider, k=K_IS, n=N_IS, quick=QUICK)
    out = benchmark.pedantic(run, rounds=3 if QUICK else 10, warmup_rounds=1)
    assert out.shape == (N_IS,) and torch.isfinite(out).all()
