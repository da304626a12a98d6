"""vae-latent: L=2 scatter by class, PCA of L=16 encodings, interpolation grids."""

from __future__ import annotations

import torch

from dgm_ext.experiments.common import RunContext, Table, fit_model, load_splits
from dgm_ext.plots import save_image_grid, scatter_by_label
from dgm_ext.vae import (
    build_vae,
    different_class_pairs,
    encode_means,
    evaluate_elbo,
    interpolate,
    pca,
    save_vae,
)


def run(ctx: RunContext) -> dict:
    """Train MLP VAEs with L=2 and L=16 and draw their latent spaces."""
    if ctx.quick:
        n_train, n_val, epochs = 3000, 500, 2
    else:
        n_train, n_val, epochs = None, None, 20
    epochs = ctx.epochs if ctx.epochs is not None else epochs
    train, val, test = load_splits(ctx, "static", n_train, n_val, None)
    ctx.log(f"data: train {len(train)}, val {len(val)} (static binarised); {epochs} epochs")
    first = test.images[:1000]
    labels = test.labels[:1000]
    out: dict = {}
    rows = []
    for latent in (2, 16):
        torch.manual_seed(ctx.seed)
        model = build_vae(ops=ctx.ops, arch="mlp", latent_dim=latent, likelihood="bernoulli")
        fit_model(ctx, model, train, val, ctx.out / f"train-L{latent}", epochs, 128, 1e-3)
        save_vae(model, ctx.path(f"model-L{latent}.pt"))
        val_elbo = evaluate_elbo(model, val)["elbo"]
        mu = encode_means(model, first)
        if latent == 2:
            scatter_by_label(
                mu,
                labels,
                ctx.path("figures", "scatter_L2.png"),
                "encoder means, L=2 (first 1000 test images)",
            )
            rows.append(["L=2", val_elbo, "", ""])
        else:
            proj, _, ratio = pca(mu, 2)
            scatter_by_label(
                proj,
                labels,
                ctx.path("figures", "pca_L16.png"),
                "PCA of encoder means, L=16 (first 1000 test images)",
                xlabel=f"PC1 ({100 * ratio[0]:.1f}% var.)",
                ylabel=f"PC2 ({100 * ratio[1]:.1f}% var.)",
            )
            rows.append(["L=16", val_elbo, float(ratio[0]), float(ratio[1])])
            out["pca_explained_variance"] = ratio.tolist()
        pairs = different_class_pairs(labels, 8, seed=ctx.seed)
        steps = 10
        grid = []
        for i, j in pairs:
            grid.append(first[i : i + 1])
            grid.append(interpolate(model, first[i], first[j], steps).cpu())
            grid.append(first[j : j + 1])
        save_image_grid(
            torch.cat(grid),
            ctx.path("figures", f"interpolation_L{latent}.png"),
            len(pairs),
            f"L={latent}: interpolation of encoder means between test images of "
            "different classes (ends: originals)",
        )
        out[f"val_elbo_L{latent}"] = val_elbo
        out[f"pairs_L{latent}"] = [(int(labels[i]), int(labels[j])) for i, j in pairs]
    table = Table(
        "vae-latent",
        ["model", "val ELBO (nats)", "PC1 var. ratio", "PC2 var. ratio"],
        rows,
        notes="MLP VAE 784-500-L, Adam 1e-3, batch 128"
        + (" (QUICK run: subsets, few epochs)." if ctx.quick else "."),
    )
    return {"_title": "vae-latent: latent spaces", "_tables": [table], **out}
