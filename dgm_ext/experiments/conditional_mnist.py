"""conditional-mnist: class-conditional VAE, GAN and RealNVP on MNIST against their
unconditional twins.

Six models, each pair trained with the same settings, once with the label and once without:

* VAE: the vae-mlp network with a small latent space (784-500-L, L = 4, Bernoulli decoder,
  dynamically binarised images, Adam 1e-3, batch 128); conditional: the one-hot label into
  encoder and decoder (Sohn et al. 2015). L = 4 because a larger code carries the class itself
  and the decoder then partly ignores the label: probes on this setup gave 86.6 % accuracy at
  L = 20 (30 epochs) and 86 % at L = 8 (10 epochs), against 96 % at L = 4 (10 epochs);
* GAN: the gan-mnist MLP GAN (non-saturating JSD, batch 64, Adam 2e-4 (0.5, 0.999), z = 100,
  images in [-1, 1]); conditional: the label into the generator (conditional BatchNorm) and the
  critic (projection discriminator, Miyato & Koyama 2018);
* RealNVP: the realnvp-mnist MLP model at half its width (8 checkerboard couplings,
  392-512-512-784 nets, dequantised 8-bit pixels, logit alpha 1e-5, Adam 1e-3, batch 128,
  gradient norm clipped at 5); conditional: the one-hot label as the context of every
  coupling net. Samples at temperature 1.

Measured with the library's shipped MNIST classifier (its 128-d feature layer for FID/KID):

* **accuracy**: the share of a conditional model's samples of class c that the classifier
  labels c (``--quick`` aside, the target is >= 95 %);
* **per-class FID / KID** of the class-c samples against the class-c test images; for an
  unconditional model, of its samples the classifier labels c (what a user without labels
  would do); and the overall FID of all samples against the test images.

Full run: 60 000 training images (the train and val splits joined), VAE 30 epochs, GAN 50
epochs, RealNVP 8 epochs, 1 000 samples per class. ``--quick``: 2 000 images, 2 epochs (RealNVP
1, with 64-wide nets), 200 samples per class (numbers mean nothing). ``--epochs`` overrides
every model's epochs. The models are saved as ``<out>/<name>/model.pt`` (VAE, RealNVP) and
``<out>/<name>/generator.pt`` (GAN) for ``<name>`` in cvae, vae, cgan, gan, crealnvp, realnvp.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dgm_ext.experiments.common import RunContext, Table

VAE_EPOCHS, GAN_EPOCHS, FLOW_EPOCHS = 30, 50, 8
LATENT = 4  # the VAEs' latent size (see the module docstring)
FLOW_HIDDEN = 512  # RealNVP coupling-net width (realnvp-mnist's 1024 halved: CPU budget)
FAMILIES = ("vae", "gan", "realnvp")


def _per_class(space: Any, test: Any, samples: Tensor, labels: Tensor) -> list[dict[str, float]]:
    """FID/KID of the samples with each label against the test images of that class (NaN
    where fewer than two samples carry the label)."""
    from dgm_ext.experiments.gan_common import SampleQuality

    out = []
    for c in range(10):
        mine = samples[labels == c]
        real = test.images[test.labels == c]
        if mine.shape[0] < 2:
            out.append({"n": int(mine.shape[0]), "fid": float("nan"), "kid": float("nan")})
            continue
        q = SampleQuality(space, real, mine.shape[0], kid_subsets=20)
        m = q.measure(mine)
        out.append({"n": int(mine.shape[0]), "fid": m["fid"], "kid": m["kid"]})
    return out


def _vae_samples(model: Any, labels: Tensor | None, n: int, seed: int) -> Tensor:
    g = torch.Generator(device=model.device).manual_seed(seed)
    with torch.no_grad():
        return model.sample(n, labels=labels, generator=g).clamp(0, 1).cpu()


def _gan_samples(model: Any, labels: Tensor | None, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.config.z_dim, generator=g)
    model.eval()
    with torch.no_grad():
        dev = next(model.generator.parameters()).device
        return model.decode(z.to(dev), labels=labels).cpu()


def _flow_samples(model: Any, labels: Tensor | None, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        parts = []
        for i in range(0, n, 1000):
            y = None if labels is None else labels[i : i + 1000]
            parts.append(model.sample(min(1000, n - i), labels=y, generator=g).clamp(0, 1).cpu())
        return torch.cat(parts)


def run(ctx: RunContext) -> dict:
    """Train the six models and compare their samples class by class."""
    from dgm_ext.data import ImageDataset
    from dgm_ext.experiments.common import fit_model, load_splits
    from dgm_ext.experiments.gan_common import GANTraining, SampleQuality
    from dgm_ext.experiments.realnvp_mnist import FlowTraining
    from dgm_ext.flows.realnvp import build_realnvp
    from dgm_ext.gan import GAN, GANConfig
    from dgm_ext.metrics import mnist_feature_space
    from dgm_ext.plots import save_image_grid
    from dgm_ext.vae import build_vae, save_vae

    n_train, per_class = (2000, 200) if ctx.quick else (None, 1000)
    vae_epochs, gan_epochs, flow_epochs = (2, 2, 1) if ctx.quick else (VAE_EPOCHS, GAN_EPOCHS,
                                                                         FLOW_EPOCHS)  # fmt: skip
    flow_hidden = 64 if ctx.quick else FLOW_HIDDEN
    if ctx.epochs is not None:
        vae_epochs = gan_epochs = flow_epochs = ctx.epochs
    train, val, test = load_splits(ctx, "grey", None, None, None)
    images = torch.cat([train.images, val.images])
    labels = torch.cat([train.labels, val.labels])
    n_train = ctx.train_size if ctx.train_size is not None else n_train
    if n_train is not None:
        images, labels = images[:n_train], labels[:n_train]
    ctx.log(f"data: {len(images)} training images; VAE {vae_epochs}, GAN {gan_epochs}, "
            f"RealNVP {flow_epochs} epochs")  # fmt: skip
    space = mnist_feature_space("mnist", root=ctx.data_root, verify=ctx.verify)
    overall = SampleQuality(space, test.images, 10 * per_class)
    wanted = torch.arange(10).repeat_interleave(per_class)
    shuffle = torch.randperm(10 * per_class, generator=torch.Generator().manual_seed(ctx.seed + 2))
    figs = ctx.out / "figures"

    results: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        for conditional in (True, False):
            name = f"{'c' if conditional else ''}{family}"
            torch.manual_seed(ctx.seed)
            k = 10 if conditional else 0
            if family == "vae":
                model: Any = build_vae(arch="mlp", latent_dim=LATENT, likelihood="bernoulli",
                                       num_classes=k, ops=ctx.ops)  # fmt: skip
                data = ImageDataset(images, labels, "dynamic", name="mnist-60k")
                rows = fit_model(ctx, model, data, None, ctx.out / name, vae_epochs, 128, 1e-3)
                save_vae(model, ctx.out / name / "model.pt")
                model.eval()
                sample = _vae_samples
            elif family == "realnvp":
                model = build_realnvp(arch="mlp", couplings=8, hidden=flow_hidden,
                                      num_classes=k, ops=ctx.ops)  # fmt: skip
                levels = (images * 255).round().long()  # MNIST's grey images are levels / 255
                data = ImageDataset(levels, labels, "levels", name="mnist-60k")
                training = FlowTraining(ctx, model, ctx.out / name, epochs=flow_epochs,
                                        grad_clip=5.0, title=name)  # fmt: skip
                rows = training.fit(data)
                sample = _flow_samples
            else:
                model = GAN(GANConfig(arch="mlp", num_classes=k), ops=ctx.ops)
                data = ImageDataset(images, labels, "grey", name="mnist-60k")
                training = GANTraining(ctx, model, ctx.out / name, epochs=gan_epochs,
                                       batch_size=64, title=name, seed=ctx.seed)  # fmt: skip
                rows = training.fit(data)
                sample = _gan_samples
            samples = sample(model, wanted if conditional else None, 10 * per_class, ctx.seed + 1)
            predicted = overall.probs(samples).argmax(1)
            by = wanted if conditional else predicted
            res: dict[str, Any] = {
                "epochs": len(rows),
                # in a seeded random order: IS cuts the samples into contiguous splits, and a
                # conditional model's are sorted by class (each split would hold one class)
                "overall": overall.measure(samples[shuffle]),
                "per_class": _per_class(space, test, samples, by),
                "class_counts": torch.bincount(predicted, minlength=10).tolist(),
            }
            if conditional:
                hits = (predicted == wanted).double()
                res["accuracy"] = float(hits.mean())
                res["accuracy_per_class"] = [float(hits[wanted == c].mean()) for c in range(10)]
            results[name] = res
            if conditional:  # one row per class: its first 10 samples
                grid = samples.view(10, per_class, *samples.shape[1:])[:, :10].flatten(0, 1)
            else:
                grid = samples[:100]
            title = f"{name}: " + ("one row per class" if conditional else "samples")
            save_image_grid(grid, figs / f"{name}_samples.png", 10, title)
            ctx.log(f"{name}: overall FID {res['overall']['fid']:.2f}"
                    + (f", accuracy {res['accuracy']:.3f}" if conditional else ""))  # fmt: skip

    def row(name: str) -> list[Any]:
        r = results[name]
        fids = [c["fid"] for c in r["per_class"]]
        finite = [f for f in fids if f == f]
        return [name, r.get("accuracy", "—"), r["overall"]["fid"], r["overall"]["kid"],
                sum(finite) / len(finite) if finite else float("nan"), *fids]  # fmt: skip

    note = (
        f"{len(images)} training images; VAE {vae_epochs} epochs (784-500-{LATENT}, Bernoulli, "
        f"dynamic binarisation), GAN {gan_epochs} epochs (MLP, non-saturating JSD), RealNVP "
        f"{flow_epochs} epochs (MLP, 8 couplings, width {flow_hidden}, temperature 1). Shipped "
        f"MNIST classifier: accuracy = share of a conditional model's class-c samples labelled c; "
        f"overall FID/KID of {10 * per_class} samples vs the 10 000 test images; per-class FID "
        f"of the samples of class c (conditional: asked for c; unconditional: labelled c by the "
        "classifier) vs the test images of class c."
        + (" QUICK run: numbers mean nothing." if ctx.quick else "")
    )
    table = Table(
        "conditional-mnist: conditional vs unconditional models",
        ["model", "accuracy", "FID", "KID", "mean class FID", *(f"FID {c}" for c in range(10))],
        [row(n) for n in ("cvae", "vae", "cgan", "gan", "crealnvp", "realnvp")],
        notes=note,
    )
    return {
        "_title": "conditional-mnist: class-conditional VAE, GAN and RealNVP on MNIST",
        "_tables": [table],
        "feature_net": space.name,
        "samples_per_class": per_class,
        "models": results,
        "accuracy_target": 0.95,
    }
