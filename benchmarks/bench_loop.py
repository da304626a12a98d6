"""Training epochs: the library's Trainer against the plain PyTorch loop a user would write,
for a VAE, a GAN and a RealNVP.

    pytest benchmarks/bench_loop.py --benchmark-json=benchmarks/loop.json

Same model and data for every provider: the vae-mlp VAE (784-500-20, Bernoulli decoder,
default Adam 1e-3, batch 128) on statically binarised MNIST (the 50 000 training images;
DGM_EXT_BENCH_QUICK=1: 2 048). One round is one epoch.

* ``plain``: the loop written as a user would write it well: data preloaded as one tensor,
  ``randperm`` per epoch, the model's encoder and decoder, ``binary_cross_entropy_with_logits``
  plus the closed-form KL in plain PyTorch, default Adam, no per-step ``.item()``.
* ``plain-compiled``: the stock best a user could write: the same loop with the loss
  function under ``torch.compile`` and ``Adam(fused=True)``.
* ``trainer-fused`` / ``trainer-reference``: ``dgm_ext.train.Trainer`` on the same model with
  what users keep on: NaN guard, per-epoch metrics (train ELBO, reconstruction, KL, bits/dim),
  the tqdm progress bar and a checkpoint written at the end of the epoch; ops ``fused``
  (``dgm_ext.ops``) or ``reference`` (plain PyTorch). Each round continues the same run
  (``epochs`` raised by one, resumed from its own checkpoint), as a user's next epoch would.
* ``trainer-compiled``: ``trainer-fused`` with ``TrainerConfig(compile_step=True)``
  (training_step and its backward compiled; the NaN guard stays on the device). Compilation
  happens in the warm-up round, which is not timed.

Before timing, one step of ``plain`` and of the trainer's loss from the same weights and batch
must agree (so the two loops train the same objective).

GAN and RealNVP epochs (``test_gan_epoch``, ``test_realnvp_epoch``), providers ``plain`` and
``trainer``:

* GAN: the MLP GAN of gan-mnist (JSD non-saturating loss, batch 64) on the first
  ``GAN_IMAGES`` grey MNIST training images. ``plain`` is benchmarks/bench_gan.py's user loop
  (BCE-with-logits losses, default Adam, checked there to take the same steps as the
  library's GAN); ``trainer`` is ``Trainer(GAN(config))`` with its NaN guard on both losses,
  metrics, progress bar and a checkpoint per epoch.
* RealNVP: the realnvp-mnist MLP model (8 couplings, hidden 1024, batch 128, Adam 1e-3,
  gradients clipped to norm 5) on ``FLOW_IMAGES`` 8-bit images. ``plain``: the model built on
  the plain-PyTorch coupling (``ops="reference"``: what a user without dgm_ext writes), fresh
  dequantisation noise, ``bits_per_dim(x).mean()``, clip, default Adam; ``trainer``: the
  library's model (fused coupling op) in the Trainer; ``trainer-compiled``: the same with
  ``compile_step=True``. Ratios are same-run medians; on two
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
from dgm_ext.flows.realnvp import build_realnvp
from dgm_ext.gan.gan import GAN, GANConfig
from dgm_ext.train import Trainer, TrainerConfig
from dgm_ext.vae import build_vae

BATCH, LR = 128, 1e-3
N_IMAGES = 2048 if QUICK else 50_000
ROUNDS = 2 if QUICK else 10
PROVIDERS = ["plain", "plain-compiled", "trainer-fused", "trainer-reference", "trainer-compiled"]


GAN_BATCH = 64
GAN_IMAGES = 512 if QUICK else 6400  # 100 steps of 64
FLOW_IMAGES = 256 if QUICK else 2560  # 20 steps of 128
FLOW_ROUNDS = 2 if QUICK else 5
FLOW_HIDDEN = 64 if QUICK else 1024


def _images(variant: str = "static", n: int = N_IMAGES) -> Tensor:
    try:
        ds = load_mnist("train", variant, download=False)
    except DatasetNotFoundError as exc:
        pytest.skip(f"MNIST not found (set DGM_EXT_DATA): {exc}")
    return ds.images[:n].clone()


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


def _plain_epoch(model, opt, images: Tensor, loss_fn=_plain_loss) -> Tensor:
    perm = torch.randperm(images.shape[0])
    loss = images.new_zeros(())
    for i in range(0, images.shape[0], BATCH):
        x = images[perm[i : i + BATCH]]
        loss = loss_fn(model, x)
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
    _info(benchmark, provider)
    if provider.startswith("plain"):
        if provider == "plain":
            opt, loss_fn = torch.optim.Adam(model.parameters(), lr=LR), _plain_loss
        else:
            opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
            loss_fn = torch.compile(_plain_loss)
        out = benchmark.pedantic(
            _plain_epoch, args=(model, opt, images, loss_fn), rounds=ROUNDS, warmup_rounds=1
        )
        assert torch.isfinite(out)
        return
    rows = _trainer_rounds(benchmark, model, images, "static", ROUNDS, batch_size=BATCH, lr=LR,
                           compile_step=provider == "trainer-compiled")  # fmt: skip
    assert rows and torch.isfinite(torch.tensor(rows[-1]["train_loss"]))


def _info(benchmark, provider: str) -> None:
    benchmark.extra_info.update(
        suite="loop",
        provider=provider,
        device="cpu",
        device_name=device_name("cpu"),
        threads=torch.get_num_threads(),
        quick=QUICK,
    )


def _trainer_rounds(
    benchmark,
    model,
    images: Tensor,
    variant: str,
    rounds: int,
    labels: Tensor | None = None,
    **config,
) -> list[dict]:
    """Time ``rounds`` epochs of ``model`` in the Trainer, each continuing the same run
    (``labels``: the images' classes, for class-conditional models; default zeros)."""
    if labels is None:
        labels = torch.zeros(images.shape[0], dtype=torch.long)
    data = ImageDataset(images, labels, variant)
    tmp = tempfile.TemporaryDirectory()
    epochs = iter(range(1, 10**6))

    def setup():
        cfg = TrainerConfig(
            run_dir=os.path.join(tmp.name, "run"),
            epochs=next(epochs),
            progress=True,
            device="cpu",
            **config,
        )
        return (Trainer(model, cfg),), {}

    rows = benchmark.pedantic(
        lambda trainer: trainer.fit(data), setup=setup, rounds=rounds, warmup_rounds=1
    )
    tmp.cleanup()
    return rows


@pytest.mark.parametrize("provider", ["plain", "trainer"])
def test_gan_epoch(benchmark, provider: str) -> None:
    from bench_gan import _plain_step

    config = GANConfig(arch="mlp", image_shape=(1, 28, 28))
    images = _images("grey", GAN_IMAGES)
    benchmark.group = f"gan epoch | mlp, batch {GAN_BATCH}, {GAN_IMAGES} images"
    _info(benchmark, provider)
    if provider == "plain":
        step, _ = _plain_step(config, "cpu")

        def epoch() -> Tensor:
            perm = torch.randperm(images.shape[0])
            out = {}
            for i in range(0, images.shape[0], GAN_BATCH):
                out = step(images[perm[i : i + GAN_BATCH]])
            return out["generator_loss"]

        assert torch.isfinite(benchmark.pedantic(epoch, rounds=ROUNDS, warmup_rounds=1))
        return
    torch.manual_seed(0)
    rows = _trainer_rounds(benchmark, GAN(config), images, "grey", ROUNDS, batch_size=GAN_BATCH)
    assert torch.isfinite(torch.tensor(rows[-1]["train_generator_loss"]))


@pytest.mark.parametrize("provider", ["plain", "trainer", "trainer-compiled"])
def test_realnvp_epoch(benchmark, provider: str) -> None:
    images = _images("levels", FLOW_IMAGES)
    benchmark.group = f"realnvp epoch | mlp hidden {FLOW_HIDDEN}, batch 128, {FLOW_IMAGES} images"
    _info(benchmark, provider)
    torch.manual_seed(0)
    ops = "reference" if provider == "plain" else None
    model = build_realnvp(ops=ops, arch="mlp", couplings=8, hidden=FLOW_HIDDEN)
    if provider == "plain":
        opt = torch.optim.Adam(model.parameters(), lr=LR)

        def epoch() -> Tensor:
            perm = torch.randperm(images.shape[0])
            loss = images.new_zeros((), dtype=torch.float32)
            for i in range(0, images.shape[0], 128):
                loss = model.bits_per_dim(images[perm[i : i + 128]]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
            return loss.detach()

        assert torch.isfinite(benchmark.pedantic(epoch, rounds=FLOW_ROUNDS, warmup_rounds=1))
        return
    rows = _trainer_rounds(benchmark, model, images, "levels", FLOW_ROUNDS, batch_size=128,
                           lr=LR, grad_clip=5.0,
                           compile_step=provider == "trainer-compiled")  # fmt: skip
    assert torch.isfinite(torch.tensor(rows[-1]["train_loss"]))
