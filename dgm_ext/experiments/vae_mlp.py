"""vae-mlp: MLP VAE 784-500-20 (Adam 1e-3, batch 128, 40 epochs) plus an L=2 manifold."""

from __future__ import annotations

import torch

from dgm_ext.experiments.common import RunContext, Table, fit_model, load_splits
from dgm_ext.plots import plot_curves, save_image_grid
from dgm_ext.vae import build_vae, evaluate_elbo, manifold_images, save_vae


def _curves(rows: list[dict]) -> tuple[list[int], list[float], list[float]]:
    ep = [int(r.get("epoch", i + 1)) for i, r in enumerate(rows)]
    return ep, [-float(r["train_elbo"]) for r in rows], [-float(r["val_elbo"]) for r in rows]


def run(ctx: RunContext) -> dict:
    """Train L=20 with sample grids at start/middle/end, then L=2 for the manifold."""
    if ctx.quick:
        n_train, n_val, epochs, grid = 3000, 1000, 2, 10
    else:
        n_train, n_val, epochs, grid = None, None, 40, 20
    epochs = ctx.epochs if ctx.epochs is not None else epochs
    train, val, _ = load_splits(ctx, "static", n_train, n_val, None)
    ctx.log(f"data: train {len(train)}, val {len(val)} (static binarised); {epochs} epochs")

    model = build_vae(ops=ctx.ops, arch="mlp", latent_dim=20, likelihood="bernoulli")
    torch.manual_seed(ctx.seed)
    z = torch.randn(64, 20)
    middle = max(1, epochs // 2)
    save_image_grid(
        model.sample(z=z),
        ctx.path("figures", "samples_epoch000.png"),
        8,
        "L=20 samples (decoder means), before training",
    )
    init = evaluate_elbo(model, val)

    def snapshot(epoch: int) -> None:
        if epoch in (middle, epochs):
            save_image_grid(
                model.sample(z=z),
                ctx.path("figures", f"samples_epoch{epoch:03d}.png"),
                8,
                f"L=20 samples (decoder means), epoch {epoch}",
            )

    rows = fit_model(
        ctx, model, train, val, ctx.out / "train-L20", epochs, 128, 1e-3, epoch_callback=snapshot
    )
    save_vae(model, ctx.path("model-L20.pt"))
    save_image_grid(
        model.sample(z=z, mean=False),
        ctx.path("figures", "samples_bernoulli_L20.png"),
        8,
        "L=20 Bernoulli samples, end of training",
    )
    ep, tr, va = _curves(rows)
    plot_curves(
        {
            "train −ELBO": ([0, *ep], [-init["elbo"], *tr]),
            "validation −ELBO": ([0, *ep], [-init["elbo"], *va]),
        },
        ctx.path("figures", "neg_elbo_curves_L20.png"),
        ylabel="negative ELBO (nats / example)",
        title="vae-mlp L=20",
    )
    ctx.log(f"L=20: val −ELBO {va[0]:.1f} (epoch 1) → {va[-1]:.1f} (epoch {ep[-1]})")

    model2 = build_vae(ops=ctx.ops, arch="mlp", latent_dim=2, likelihood="bernoulli")
    rows2 = fit_model(ctx, model2, train, val, ctx.out / "train-L2", epochs, 128, 1e-3)
    save_vae(model2, ctx.path("model-L2.pt"))
    save_image_grid(
        manifold_images(model2, grid),
        ctx.path("figures", "manifold_L2.png"),
        grid,
        f"L=2 manifold: decoder means on a {grid}x{grid} grid of N(0,1) quantiles in [0.05, 0.95]",
    )
    ep2, tr2, va2 = _curves(rows2)
    plot_curves(
        {"train −ELBO": (ep2, tr2), "validation −ELBO": (ep2, va2)},
        ctx.path("figures", "neg_elbo_curves_L2.png"),
        ylabel="negative ELBO (nats / example)",
        title="vae-mlp L=2",
    )
    table = Table(
        "vae-mlp: negative ELBO (nats / example)",
        [
            "model",
            "val before training",
            "train epoch 1",
            "val epoch 1",
            "train last",
            "val last",
            "epochs",
        ],
        [
            ["L=20", -init["elbo"], tr[0], va[0], tr[-1], va[-1], len(rows)],
            ["L=2", "", tr2[0], va2[0], tr2[-1], va2[-1], len(rows2)],
        ],
        notes="Reference: negative ELBO falls from ~170 to ~100 (L=20). Training values are "
        "running means over the epoch; validation values are on the 10k validation split"
        + (" (QUICK run: subsets, few epochs)." if ctx.quick else "."),
    )
    return {
        "_title": "vae-mlp: MLP VAE 784-500-L on binarised MNIST",
        "_tables": [table],
        "val_neg_elbo_L20": va,
        "train_neg_elbo_L20": tr,
        "val_neg_elbo_L2": va2,
        "val_neg_elbo_init_L20": -init["elbo"],
    }
