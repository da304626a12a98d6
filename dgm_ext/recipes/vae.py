"""``dgm-ext train vae``: one VAE on MNIST-like data into a run folder."""

from __future__ import annotations

import argparse
import time

from dgm_ext.recipes.base import Recipe, save_options
from dgm_ext.recipes.datasets import add_data_options, check_data, load_training_data
from dgm_ext.recipes.options import (
    RESUME_HELP,
    add_common,
    add_compile,
    add_trainer_options,
    add_training,
    check_counts,
    check_rates,
    out_dir,
    run_context,
    trainer_options,
)

__all__ = ["RECIPE", "VAE_KEYS", "default_variant", "vae_config"]

# the VAEConfig keywords among the options (also read back from a run's vae_args.json)
VAE_KEYS = ("arch", "latent_dim", "hidden", "likelihood", "categories", "decoder_shift",
            "flow_length")  # fmt: skip


def default_variant(likelihood: str) -> str:
    """The MNIST variant a likelihood models by default."""
    return {"bernoulli": "static", "categorical": "levels"}.get(likelihood, "grey")


def vae_config(options: dict) -> dict:
    """The ``VAEConfig`` keywords among ``train vae``'s options."""
    return {k: options[k] for k in VAE_KEYS}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``train vae``."""
    from dgm_ext.data.dataset import VARIANTS
    from dgm_ext.vae.likelihoods import LIKELIHOODS
    from dgm_ext.vae.networks import ARCHITECTURES

    add_common(p)
    add_training(p)
    p.add_argument("--out", default=None, help="run directory (default runs/vae-<time>)")
    add_data_options(p)
    p.add_argument("--arch", default="mlp", choices=list(ARCHITECTURES))
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", type=int, default=None, help="hidden width of MLP nets")
    p.add_argument("--likelihood", default="bernoulli", choices=list(LIKELIHOODS))
    p.add_argument("--categories", type=int, default=4, help="bins of the categorical")
    p.add_argument(
        "--variant",
        default=None,
        choices=list(VARIANTS),
        help="data variant (default: static for bernoulli, levels for categorical, grey otherwise)",
    )
    p.add_argument(
        "--conditional",
        action="store_true",
        help="class-conditional VAE (Sohn et al. 2015): the label into encoder and decoder",
    )
    p.add_argument("--decoder-shift", type=float, default=0.0, help="mlp-deep output shift")
    p.add_argument("--flow-length", type=int, default=0, help="planar posterior layers")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=None, help="early stopping patience")
    p.add_argument("--train-size", type=int, default=None, help="use the first N train images")
    p.add_argument("--val-size", type=int, default=None, help="use the first N val images")
    p.add_argument("--k", type=int, default=0, help="also report test log p(x) with K samples")
    add_trainer_options(p)
    add_compile(p)


def run(args: argparse.Namespace) -> dict:
    """Train, save ``model.pt``, evaluate the val ELBO (and test log p(x) with ``--k``)."""
    import json

    from dgm_ext.experiments.common import fit_model, prepare_run_dir
    from dgm_ext.vae import VAEConfig, build_vae, evaluate_elbo, evaluate_log_likelihood, save_vae

    variant = args.variant if args.variant is not None else default_variant(args.likelihood)
    cfg = vae_config(vars(args))
    VAEConfig(**cfg)  # options first: nothing is loaded or written before they pass
    check_counts(args, epochs=0, batch_size=1, patience=1, train_size=1, val_size=1, k=0)
    check_rates(args, "lr")
    check_data(args)
    out = out_dir(args, "vae")
    ctx = run_context(args, "train-vae", out, trainer_options(args))
    data = load_training_data(args, variant)
    cfg.update(image_shape=data.image_shape, num_classes=data.num_classes * args.conditional)
    VAEConfig(**cfg)  # the data's shape for this architecture: refused before the run folder
    train, val, test = data.train, data.val, data.test
    prepare_run_dir(out, args.fresh)  # the data is there: now the run folder
    save_options(out, RECIPE, args)
    model = build_vae(ops=args.ops, **cfg)
    t0 = time.perf_counter()
    rows = fit_model(
        ctx, model, train, val, out, args.epochs, args.batch_size, args.lr, args.patience
    )
    save_vae(model, out / "model.pt")
    res = {
        "model": str(out / "model.pt"),
        "epochs": len(rows),  # trained (0 with --epochs 0: the untrained model is evaluated)
        "train_time_s": time.perf_counter() - t0,
        "data": data.name,
        "image_shape": list(data.image_shape),
        "variant": variant,
        "ops": model.ops.__name__,
        "device": str(model.device),
    }
    res["val"] = evaluate_elbo(model, val)
    if args.k > 0:
        res["test_log_px"] = evaluate_log_likelihood(model, test, k=args.k)
    (out / "eval.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    return res


RECIPE = Recipe(
    name="train vae",
    help="train a VAE",
    add_arguments=add_arguments,
    run=run,
    epilog=RESUME_HELP,
    options_file="vae_args.json",
)
