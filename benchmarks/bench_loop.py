"""A VAE training epoch: the library's Trainer against the plain PyTorch loop a user would write.

    pytest benchmarks/bench_loop.py --benchmark-json=benchmarks/loop.json

Same model and data for every provider: the vae-mlp VAE (784-500-20, Bernoulli decoder,
default Adam 1e-3, batch 128) on statically binarised MNIST (the 50 000 training images;
DGM_EXT_BENCH_QUICK=1: 2 048). One round is one epoch.

* ``plain``: the loop written as a user would write it well: data preloaded as one tensor,
  ``randperm`` per epoch, the model's encoder and decoder, ``binary_cross_entropy_with_logits``
  plus the closed-form KL in plain PyTorch, default Adam, no per-step ``.item()``.
* ``trainer-fused`` / ``trainer-reference``: ``dgm_ext.train.Trainer`` on the same model with
  what users keep on: NaN guard, per-epoch metrics (train ELBO, reconstruction, KL, bits/dim),
  the tqdm progress bar and a checkpoint written at the end of the epoch; ops ``fused``
  (``dgm_ext.ops``) or ``reference`` (plain PyTorch). Each round continues the same run
  (``epochs`` raised by one, resumed from its own checkpoint), as a user's next epoch would.

Before timing, one step of ``plain`` and of the trainer's loss from the same weights and batch
must agree (so the two loops train the same objective). Ratios are same-run medians; on two
cores any other busy process distorts them (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.nn.functional as F
from cases import QUICK, device_name
from torch import Tensor

from dgm_ext.data import DatasetNotFoundError, ImageDataset, load_mnist
from dgm_ext.train import Trainer, TrainerConfig
from dgm_ext.vae import build_vae

BATCH, LR = 128, 1e-3
N_IMAGES = 2048 if QUICK else 50_000
ROUNDS = 2 if QUICK else 10
PROVIDERS = ["plain", "trainer-fused", "trainer-reference"]


def _images() -> Tensor:
    try:
        ds = load_mnist("train", "static", download=False)
    except DatasetNotFoundError as exc:
        pytest.skip(f"MNIST not found (set DGM_EXT_DATA): {exc}")
    return ds.images[:N_IMAGES].clone()


def _model(ops: str):
    torch.manual_seed(0)
    return build_vae(ops=ops, arch="mlp", latent_dim=20, hidden=500, likelihood="bernoulli")


def _plain_loss(model, x: Tensor) -> Tensor:
    """The user's loss: BCE-with-logits summed over pixels + closed-form KL, batch mean."""
    mu, logvar, _ = model.encoder(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    logits = model.decoder(z).flatten(1)
    rec = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
    return (rec + kl).mean()


def _plain_epoch(model, opt, images: Tensor) -> Tensor:
    perm = torch.randperm(images.shape[0])
    loss = images.new_zeros(())
    for i in range(0, images.shape[0], BATCH):
        x = images[perm[i : i + BATCH]]
        loss = _plain_loss(model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return loss.detach()


def test_losses_agree() -> None:
    """The plain loop and the trainer's model optimise the same objective."""
    images = _images()[:BATCH]
    model = _model("fused")
    torch.manual_seed(1)
    plain = _plain_loss(model, images)
    torch.manual_seed(1)
    ours = model.training_step((images, None))["loss"]
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_vae_epoch(benchmark, provider: str) -> None:
    images = _images()
    model = _model("reference" if provider == "trainer-reference" else "fused")
    benchmark.group = f"vae epoch | 784-500-20, batch {BATCH}, {N_IMAGES} images"
    benchmark.extra_info.update(
        suite="loop",
        provider=provider,
        device="cpu",
        device_name=device_name("cpu"),
        threads=torch.get_num_threads(),
        quick=QUICK,
    )
    if provider == "plain":
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        out = benchmark.pedantic(
            _plain_epoch, args=(model, opt, images), rounds=ROUNDS, warmup_rounds=1
        )
        assert torch.isfinite(out)
        return
    data = ImageDataset(images, torch.zeros(images.shape[0], dtype=torch.long), "static")
    tmp = tempfile.TemporaryDirectory()
    epochs = iter(range(1, 10**6))

    def setup():
        cfg = TrainerConfig(
            run_dir=os.path.join(tmp.name, "run"),
            epochs=next(epochs),
            batch_size=BATCH,
            lr=LR,
            progress=True,
            device="cpu",
        )
        return (Trainer(model, cfg),), {}

    def run(trainer):
        return trainer.fit(data)

    rows = benchmark.pedantic(run, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    assert rows and torch.isfinite(torch.tensor(rows[-1]["train_loss"]))
    tmp.cleanup()
