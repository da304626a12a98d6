"""gan-mnist: the MLP GAN of SPEC §2 on MNIST, with FID/KID over training.

Setup (SPEC §3): non-saturating JSD loss, batch 64, Adam 2e-4 (betas (0.5, 0.999), the DCGAN
choice; the SPEC names none), z = 100, data scaled to [-1, 1], 200 epochs (``--epochs`` for
fewer); the 60 000 images of the MNIST training file (the 50k/10k train/val splits joined: a
GAN has no validation loss). Sample quality is measured with the library's MNIST classifier
(128-d feature layer): FID and KID of 10 000 generated samples against the 10 000 test
images and the Inception-Score analogue, at epochs 1-10 and every 5th epoch, beside the
training metric (the JSD estimate ``½(E log σ(C(x)) + E log(1 - σ(C(G(z))))) + log 2``).

Figures: 25-sample grids (untrained, epoch 1, middle, end), loss curves, the JSD estimate
with FID, a 7-step latent interpolation between two samples the classifier labels
differently, the class histogram of 10 000 samples. ``--quick``: 2 000 images, 2 epochs, a
small classifier and 1 000 samples (numbers not comparable with full runs). Rerunning into
the same ``--out`` resumes the training (e.g. after an interruption, or with a larger
``--epochs``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from dgm_ext.experiments.common import RunContext, Table
from dgm_ext.experiments.gan_common import (
    GANTraining,
    SampleQuality,
    eval_epochs,
    grid_epochs,
    plot_metric_and_fid,
    spearman,
    train_seconds,
    using_ema,
)
from dgm_ext.gan import GAN, GANConfig

QUICK_CLASSIFIER = {"width": 32, "channels": (8, 16), "epochs": 1, "batch_size": 64,
                    "lr": 5e-3, "n_train": 5000, "n_eval": 2000}  # fmt: skip


def _interpolation(
    model: GAN, quality: SampleQuality, seed: int, steps: int = 7, candidates: int = 256
) -> tuple[Tensor, list[int]]:
    """``steps`` images on the line between two latent codes (both endpoints included) whose
    samples the classifier labels differently, and the labels of all of them.

    Among ``candidates`` seeded draws the endpoints are the most confidently classified
    sample and the most confident one of another class (the same class only if every
    candidate has it).
    """
    device = next(model.parameters()).device
    z = torch.randn(candidates, model.config.z_dim, generator=torch.Generator().manual_seed(seed))
    z = z.to(device)
    probs = quality.probs(model.decode(z).cpu())
    conf, label = probs.max(1)
    first = int(conf.argmax())
    other = label != label[first]
    second = int(torch.where(other, conf, conf.new_full((), -1.0)).argmax()) if other.any() else 0
    t = torch.linspace(0, 1, steps, device=device).unsqueeze(1)
    images = model.decode((1 - t) * z[first] + t * z[second]).cpu()
    return images, quality.probs(images).argmax(1).tolist()


def check(ctx: RunContext) -> None:
    """Refuse a bad ``--ema`` before the run directory is created."""
    ema = ctx.extra.get("ema")
    if ema is not None and (
        isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 < ema < 1
    ):
        raise ValueError(f"--ema must be in (0, 1), got {ema!r}")


def run(ctx: RunContext) -> dict:
    """Train the MLP GAN and measure its samples over training."""
    from dgm_ext.data import ImageDataset
    from dgm_ext.experiments.common import load_splits
    from dgm_ext.plots import plot_curves, save_image_grid

    if ctx.quick:
        n_train, epochs, n_samples, classifier = 2000, 2, 1000, QUICK_CLASSIFIER
    else:
        n_train, epochs, n_samples, classifier = None, 200, 10_000, None
    epochs = ctx.epochs if ctx.epochs is not None else epochs
    ema = ctx.extra.get("ema")
    train, val, test = load_splits(ctx, "grey", None, None, 1000 if ctx.quick else None)
    images = torch.cat([train.images, val.images])
    labels = torch.cat([train.labels, val.labels])
    n_train = ctx.train_size if ctx.train_size is not None else n_train
    if n_train is not None:
        images, labels = images[:n_train], labels[:n_train]
    data = ImageDataset(images, labels, "grey", name="mnist-train-60k")
    ctx.log(f"data: {len(data)} training images, {len(test)} test images; {epochs} epochs")

    from dgm_ext.metrics import mnist_feature_space

    space = mnist_feature_space(
        "mnist", root=ctx.data_root, train_config=classifier, verify=ctx.verify
    )
    quality = SampleQuality(space, test.images, n_samples)
    floor = quality.measure(images[: len(test)])  # training images vs test images
    ctx.log(f"floor (training vs test images): FID {floor['fid']:.3f}")

    torch.manual_seed(ctx.seed)
    config = GANConfig(arch="mlp", loss=str(ctx.extra.get("loss", "jsd-nonsaturating")),
                       lr_generator=2e-4, lr_critic=2e-4, betas=(0.5, 0.999))  # fmt: skip
    model = GAN(config, ops=ctx.ops)
    run_dir = ctx.out / "train"
    training = GANTraining(
        ctx, model, run_dir, epochs=epochs, batch_size=64, ema_decay=ema, evaluate=quality,
        evaluate_at=eval_epochs(epochs), grids_at=grid_epochs(epochs), title="gan-mnist",
        seed=ctx.seed,
    )  # fmt: skip
    rows = training.fit(data)
    trainer = training.trainer

    figs = ctx.out / "figures"
    metric = "train_jsd" if model.metric_name == "jsd" else "train_w1"
    ep = [r["epoch"] for r in rows]
    plot_curves(
        {"critic": (ep, [r["train_critic_loss"] for r in rows]),
         "generator": (ep, [r["train_generator_loss"] for r in rows])},
        figs / "losses.png", ylabel="loss (per-epoch mean)", title="gan-mnist: training losses",
    )  # fmt: skip
    plot_metric_and_fid(
        rows, metric, figs / "metric_and_fid.png",
        f"gan-mnist: {metric} and FID (MNIST classifier, {n_samples} samples vs test)",
    )  # fmt: skip
    evaluated = [r for r in rows if "fid" in r]
    corr = {
        "fid_vs_jsd": spearman([r["fid"] for r in evaluated], [r[metric] for r in evaluated]),
        "kid_vs_jsd": spearman([r["kid"] for r in evaluated], [r[metric] for r in evaluated]),
        "fid_vs_epoch": spearman([r["fid"] for r in evaluated], [r["epoch"] for r in evaluated]),
        "jsd_vs_epoch": spearman([r[metric] for r in evaluated], [r["epoch"] for r in evaluated]),
    }

    with using_ema(model, trainer):
        model.to(trainer.device)
        final = training.sampler(ctx.seed + 2)(n_samples)
        probs = quality.probs(final)
        interp, interp_labels = _interpolation(model, quality, ctx.seed)
    save_image_grid(
        interp, figs / "interpolation.png", 1,
        f"gan-mnist: linear interpolation in z, classifier labels {interp_labels}",
    )  # fmt: skip
    predicted = probs.argmax(1)
    hist = torch.bincount(predicted, minlength=10).tolist()
    confident = float((probs.max(1).values > 0.9).double().mean())
    _class_histogram(hist, figs / "class_histogram.png", n_samples, confident)

    table_rows = [
        [r["epoch"], r[metric], r["fid"], r["kid"], r["kid_std"], r["is"], train_seconds(r)]
        for r in evaluated
    ]
    table_rows.append(["floor: train vs test images", "", floor["fid"], floor["kid"],
                       floor["kid_std"], floor["is"], ""])  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    tables = [
        Table(
            "gan-mnist: sample quality over training",
            ["epoch", metric, "FID", "KID", "KID std", "IS", "s/epoch"],
            table_rows,
            notes=(
                f"MLP GAN ({params:,} parameters), non-saturating JSD, batch 64, Adam 2e-4 "
                f"(0.5, 0.999), {len(data)} images, {epochs} epochs"
                + (f", generator EMA {ema}" if ema else "")
                + f". FID/KID/IS in the MNIST classifier's feature space ({n_samples} samples"
                f" vs {len(test)} test images; KID over 100 subsets of "
                f"{min(1000, n_samples)}). Spearman rank correlation over the evaluated "
                f"epochs: FID vs {metric} {corr['fid_vs_jsd']:.3f}, KID vs {metric} "
                f"{corr['kid_vs_jsd']:.3f}, FID vs epoch {corr['fid_vs_epoch']:.3f}, {metric} "
                f"vs epoch {corr['jsd_vs_epoch']:.3f}."
                + (" QUICK run: small classifier and subsets; not comparable." if ctx.quick else "")
            ),
        ),
        Table(
            "gan-mnist: mode coverage (final generator)",
            ["class", *map(str, range(10)), "p > 0.9"],
            [["samples", *hist, confident]],
            notes=f"classifier labels of {n_samples} samples; last column: share classified "
            "with probability > 0.9",
        ),
    ]
    return {
        "_title": "gan-mnist: MLP GAN on MNIST",
        "_tables": tables,
        "epochs": rows[-1]["epoch"],
        "parameters": params,
        "seconds_per_epoch": float(np.mean([train_seconds(r) for r in rows])),
        "evaluations": [
            {
                **{k: r[k] for k in ("epoch", metric, "fid", "kid", "kid_std", "is")},
                "train_s": train_seconds(r),
                "eval_s": r["eval_s"],
            }
            for r in evaluated
        ],
        "final": {k: evaluated[-1][k] for k in ("fid", "kid", "kid_std", "is")},
        "floor": floor,
        "spearman": corr,
        "class_histogram": hist,
        "share_confident": confident,
        "interpolation_labels": interp_labels,
        "feature_net": f"{space.name} ({space.layer}, {space.width}-d)",
    }


def _class_histogram(hist: list[int], path: Any, n: int, confident: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.bar(range(10), hist, color="C0")
    ax.axhline(n / 10, color="k", lw=0.8, ls="--", label="uniform")
    ax.set_xticks(range(10))
    ax.set_xlabel("class (MNIST classifier)")
    ax.set_ylabel("samples")
    ax.set_title(f"gan-mnist: classes of {n} samples ({100 * confident:.1f}% with p > 0.9)",
                 fontsize=10)  # fmt: skip
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
