"""End-to-end VAE timings: trainer steps and importance-sampled evaluation, fused vs reference.

    pytest benchmarks/bench_vae_trainer.py --benchmark-json=benchmarks/vae.json

Both providers run the same vae-elbo model (784-300-300-100, Bernoulli, batch 64) on the
same data; ``fused`` uses ``dgm_ext.ops``, ``reference`` uses ``dgm_ext.ops.reference``.
The trainer case times a fixed number of optimiser steps through ``dgm_ext.train.Trainer``
(fresh run directory every round, so no resume), for the plain model (``flow`` 0) and the
vae-flow models with an amortised planar posterior of 10 and 40 layers (fused: the per-row
op ``planar_flow_rows``; reference: its plain-PyTorch loop over the layers). 200 steps are a
quarter of a vae-elbo / vae-flow epoch (782 steps). The evaluation case times log p(x) with
K=200 importance samples for 100 images (the 200×100×784 Bernoulli of SPEC §4).
Every case runs on each device of ``cases.DEVICES`` (the CPU, and CUDA when available);
CUDA rounds end with ``torch.cuda.synchronize``.

Uses statically binarised MNIST from ``$DGM_EXT_DATA``. When the MNIST files are not found
(``DatasetNotFoundError``: DGM_EXT_DATA unset or files missing), it warns and times random
binary images instead, recorded as ``extra_info["data"] == "random"`` and flagged by
report.py (timings only, fine for a CI smoke run); any other data error (corrupt files,
wrong checksum) fails.
DGM_EXT_BENCH_QUICK=1 shrinks every size (CI smoke run).
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings

import pytest
import torch
from cases import DEVICES, device_name

import dgm_ext
from dgm_ext.data import DatasetNotFoundError, ImageDataset, load_mnist
from dgm_ext.train import Trainer, TrainerConfig
from dgm_ext.vae import build_vae, importance_log_likelihood

QUICK = os.environ.get("DGM_EXT_BENCH_QUICK", "0") not in ("", "0")
STEPS = 5 if QUICK else 200
BATCH = 64
N_IS, K_IS = (10, 20) if QUICK else (100, 200)
PROVIDERS = ["fused", "reference"]


def _data() -> tuple[ImageDataset, str]:
    """``(dataset, source)``: the first STEPS x BATCH MNIST training images ("mnist"), or, when
    the MNIST files are missing, random binary images ("random") with a loud warning."""
    n = STEPS * BATCH
    try:
        ds = load_mnist("train", "static", download=False)
    except DatasetNotFoundError as exc:
        msg = (
            "bench_vae_trainer: MNIST not found, timing RANDOM binary images instead "
            f"(set DGM_EXT_DATA to the folder holding mnist/): {exc}"
        )
        print(f"WARNING: {msg}", file=sys.stderr)
        warnings.warn(msg, stacklevel=1)
        g = torch.Generator().manual_seed(0)
        images = (torch.rand(n, 1, 28, 28, generator=g) < 0.13).float()
        return ImageDataset(images, torch.zeros(n, dtype=torch.long), "static"), "random"
    return ImageDataset(ds.images[:n], ds.labels[:n], "static"), "mnist"


DATA, DATA_SOURCE = _data()


FLOWS = [0, 10, 40]


def _model(provider: str, flow: int = 0):
    torch.manual_seed(0)
    return build_vae(
        ops=provider,
        arch="mlp-deep",
        latent_dim=100,
        likelihood="bernoulli",
        decoder_shift=-5.0,
        flow_length=flow,
    )


def _skip_unbuilt(device: str, provider: str) -> None:
    if device == "cuda" and provider == "fused" and not dgm_ext.build_info()["cuda"]:
        pytest.skip("dgm_ext was built without CUDA kernels")


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def _group(name: str, device: str) -> str:
    return name if device == "cpu" else f"{name} | {device}"


def _info(provider: str, device: str) -> dict:
    return dict(
        provider=provider,
        device=device,
        device_name=device_name(device),
        data=DATA_SOURCE,
        quick=QUICK,
    )


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("device", DEVICES)
def test_vae_trainer_steps(benchmark, device: str, flow: int, provider: str) -> None:
    _skip_unbuilt(device, provider)
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
            device=device,
        )
        return (Trainer(_model(provider, flow), cfg),), {}

    def run(trainer):
        rows = trainer.fit(DATA)
        _sync(device)
        return rows

    name = "vae trainer" if flow == 0 else f"vae-flow trainer K={flow}"
    benchmark.group = _group(f"{name} | {STEPS} steps, batch {BATCH}", device)
    benchmark.extra_info.update(_info(provider, device), steps=STEPS, batch=BATCH, flow=flow)
    rows = benchmark.pedantic(run, setup=setup, rounds=2 if QUICK else 5, warmup_rounds=1)
    assert rows and torch.isfinite(torch.tensor(rows[-1]["train_loss"]))
    tmp.cleanup()


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("device", DEVICES)
def test_vae_importance_sampling(benchmark, device: str, provider: str) -> None:
    _skip_unbuilt(device, provider)
    model = _model(provider).to(device).eval()
    images = DATA.images[:N_IS].to(device)

    def run():
        torch.manual_seed(0)
        out = importance_log_likelihood(model, images, k=K_IS)
        _sync(device)
        return out

    benchmark.group = _group(f"vae IS log p(x) | K={K_IS}, {N_IS} images", device)
    benchmark.extra_info.update(_info(provider, device), k=K_IS, n=N_IS)
    out = benchmark.pedantic(run, rounds=3 if QUICK else 10, warmup_rounds=1)
    assert out.shape == (N_IS,) and torch.isfinite(out).all()
