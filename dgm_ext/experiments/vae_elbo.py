"""vae-elbo: VAE L=100 (784-300-300, ELU, logits − 5) on statically binarised MNIST."""

from __future__ import annotations

import torch

from dgm_ext.experiments.common import RunContext, Table, fit_model, load_splits
from dgm_ext.plots import plot_curves, save_image_grid
from dgm_ext.vae import build_vae, evaluate_elbo, evaluate_log_likelihood, save_vae

REFERENCE_VAL_ELBO = -100.9
TARGET_VAL_ELBO = -102.0
REFERENCE_TEST_LOGPX = -95.6
# the vae-elbo model of SPEC §3 (784-300-300 ELU, L = 100, logits − 5); vae-flow adds a flow
MODEL = {
    "arch": "mlp-deep",
    "latent_dim": 100,
    "likelihood": "bernoulli",
    "decoder_shift": -5.0,
}


def run(ctx: RunContext) -> dict:
    """Train, evaluate (val/test ELBO, test log p(x) by importance sampling), plot."""
    if ctx.quick:
        n_train, n_val, n_test, epochs, k, n_is = 3000, 1000, 200, 2, 20, 200
    else:
        n_train, n_val, n_test, epochs, k, n_is = None, None, None, 20, 200, None
    epochs = ctx.epochs if ctx.epochs is not None else epochs
    k = ctx.k if ctx.k is not None else k
    train, val, test = load_splits(ctx, "static", n_train, n_val, n_test)
    ctx.log(f"data: train {len(train)}, val {len(val)}, test {len(test)} (static binarised)")
    model = build_vae(ops=ctx.ops, **MODEL)
    rows = fit_model(ctx, model, train, val, ctx.out / "train", epochs, batch_size=64, lr=3e-4)
    save_vae(model, ctx.path("model.pt"))
    epochs_done = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
    val_curve = [float(r["val_elbo"]) for r in rows]
    train_curve = [float(r["train_elbo"]) for r in rows]
    plot_curves(
        {"train ELBO": (epochs_done, train_curve), "validation ELBO": (epochs_done, val_curve)},
        ctx.path("figures", "elbo_curve.png"),
        ylabel="ELBO (nats / example)",
        title="vae-elbo: L=100, Adam 3e-4, batch 64",
    )
    ctx.log("evaluating ELBO on val/test")
    val_elbo = evaluate_elbo(model, val)
    test_elbo = evaluate_elbo(model, test)
    ctx.log(f"val ELBO {val_elbo['elbo']:.2f}, test ELBO {test_elbo['elbo']:.2f}; IS K={k}")
    test_ll = evaluate_log_likelihood(model, test, k=k, limit=n_is)
    ctx.log(f"test log p(x) {test_ll['log_px']:.2f} ± {test_ll['log_px_se']:.2f}")
    torch.manual_seed(ctx.seed)
    z = torch.randn(64, model.latent_dim)
    save_image_grid(
        model.sample(z=z, mean=True), ctx.path("figures", "samples_mean.png"), 8, "decoder means"
    )
    save_image_grid(
        model.sample(z=z, mean=False),
        ctx.path("figures", "samples_bernoulli.png"),
        8,
        "Bernoulli samples",
    )
    recon = torch.cat([test.images[:16], model.reconstruct(test.images[:16]).cpu()])
    save_image_grid(
        recon,
        ctx.path("figures", "reconstructions.png"),
        2,
        "test images (top) and reconstructions (bottom)",
    )
    final_val = val_curve[-1]
    table = Table(
        "vae-elbo",
        ["quantity", "this run", "reference run", "target"],
        [
            [
                "validation ELBO, last epoch (trainer, 1 sample)",
                final_val,
                REFERENCE_VAL_ELBO,
                f">= {TARGET_VAL_ELBO}",
            ],
            ["validation ELBO, best epoch", max(val_curve), REFERENCE_VAL_ELBO, ""],
            ["validation ELBO, final model (re-evaluated)", val_elbo["elbo"], "", ""],
            ["test ELBO", test_elbo["elbo"], "", ""],
            [
                f"test log p(x), IS K={k} (± s.e.)",
                f"{test_ll['log_px']:.2f} ± {test_ll['log_px_se']:.2f}",
                REFERENCE_TEST_LOGPX,
                "",
            ],
            ["test bits/dim (binary pixels, from log p(x))", test_ll["bpd"], "", ""],
            [
                "test KL / reconstruction (nats)",
                f"{test_elbo['kl']:.2f} / {-test_elbo['rec']:.2f}",
                "",
                "",
            ],
            ["epochs", len(rows), 20, ""],
        ],
        notes=(
            "ELBO and log p(x) in nats per test example on statically binarised MNIST "
            "(one seeded Bernoulli draw of the grey levels; 50k/10k/10k). "
            + (
                "QUICK run: data subsets and few epochs, numbers are not comparable."
                if ctx.quick
                else ""
            )
        ),
    )
    return {
        "_title": "vae-elbo: VAE with L=100 on binarised MNIST",
        "_tables": [table],
        "epochs": len(rows),
        "val_elbo_curve": val_curve,
        "train_elbo_curve": train_curve,
        "val_elbo_last": final_val,
        "val_elbo_best": max(val_curve),
        "val": val_elbo,
        "test": test_elbo,
        "test_log_px": test_ll,
        "meets_target": final_val >= TARGET_VAL_ELBO,
    }
