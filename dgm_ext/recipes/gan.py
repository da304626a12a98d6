"""``dgm-ext train gan``: one GAN (MLP on MNIST-like data, DCGAN on CIFAR-10) into a run folder."""

from __future__ import annotations

import argparse
import json

from dgm_ext.recipes.base import Recipe, save_options
from dgm_ext.recipes.options import (
    DATASETS,
    RESUME_HELP,
    add_common,
    add_trainer_options,
    add_training,
    check_counts,
    out_dir,
    trainer_options,
)

__all__ = ["RECIPE"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``train gan``."""
    from dgm_ext.gan.gan import ARCHS, PENALTIES
    from dgm_ext.gan.losses import CRITIC_LOSSES

    add_common(p, data_seed=False)  # grey or RGB images: no binarisation
    add_training(p)
    p.add_argument("--out", default=None, help="run directory (default runs/gan-<time>)")
    p.add_argument("--dataset", default="mnist", choices=list(DATASETS))
    p.add_argument(
        "--arch", default=None, choices=list(ARCHS), help="default: mlp, dcgan for cifar10"
    )
    p.add_argument("--loss", default="jsd-nonsaturating", choices=list(CRITIC_LOSSES))
    p.add_argument(
        "--penalty", default="none", choices=["none", *(x for x in PENALTIES if x is not None)]
    )
    p.add_argument("--penalty-weight", type=float, default=0.0)
    p.add_argument("--critic-steps", type=int, default=1, help="critic steps per generator step")
    p.add_argument("--lr-generator", type=float, default=2e-4)
    p.add_argument("--lr-critic", type=float, default=2e-4)
    p.add_argument("--betas", type=float, nargs=2, default=(0.5, 0.999), metavar=("B1", "B2"))
    p.add_argument("--z-dim", type=int, default=100)
    p.add_argument("--width", type=int, default=128, help="DCGAN width")
    p.add_argument("--spectral-norm", action="store_true", help="DCGAN critic")
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="SyncBatchNorm in the generator (torchrun on GPUs: global batch statistics)",
    )
    p.add_argument("--ema", type=float, default=None, help="generator EMA decay")
    p.add_argument(
        "--conditional",
        action="store_true",
        help="class-conditional GAN: labels into the generator (conditional BatchNorm) and "
        "the critic (projection discriminator)",
    )
    add_trainer_options(p)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-size", type=int, default=None, help="use the first N images")
    p.add_argument(
        "--metrics-every",
        type=int,
        default=0,
        help="FID/KID/IS of --n samples every N epochs and at the end (MNIST-like data: the "
        "library's classifier; default 0: only at the end)",
    )
    p.add_argument("--n", type=int, default=10_000, help="samples for the metrics")
    p.add_argument(
        "--inception-weights",
        default=None,
        help="FID Inception-v3 weights for cifar10 (default $DGM_EXT_INCEPTION_WEIGHTS)",
    )


def run(args: argparse.Namespace) -> dict:
    """Train, save ``generator.pt`` and sample grids, FID/KID/IS at the end (and every
    ``--metrics-every`` epochs)."""
    import torch

    from dgm_ext.data import ImageDataset, load_cifar10, load_mnist
    from dgm_ext.experiments.common import RunContext, prepare_run_dir
    from dgm_ext.experiments.gan_common import GANTraining, SampleQuality, grid_epochs
    from dgm_ext.gan import GAN, GANConfig
    from dgm_ext.metrics import evaluate as ev

    rgb = args.dataset == "cifar10"
    config = GANConfig(
        arch=args.arch if args.arch is not None else "dcgan" if rgb else "mlp",
        z_dim=args.z_dim,
        image_shape=(3, 32, 32) if rgb else (1, 28, 28),
        loss=args.loss,
        penalty=None if args.penalty == "none" else args.penalty,
        penalty_weight=args.penalty_weight,
        critic_steps=args.critic_steps,
        lr_generator=args.lr_generator,
        lr_critic=args.lr_critic,
        betas=tuple(args.betas),
        width=args.width,
        spectral_norm=args.spectral_norm,
        sync_batchnorm=args.sync_bn,
        num_classes=10 if args.conditional else 0,  # MNIST, Fashion-MNIST, CIFAR-10
    )  # validates before any data is loaded
    trainer = trainer_options(args, default_step=False)
    check_counts(args, epochs=1, metrics_every=0, n=2, batch_size=1, train_size=1)
    if args.ema is not None and not 0 < args.ema < 1:
        raise ValueError(f"--ema must be in (0, 1), got {args.ema}")
    out = out_dir(args, "gan")
    verify = not args.no_verify
    if rgb:
        space = ev.inception_feature_space(args.inception_weights)  # fails early without weights
        data = load_cifar10("train", root=args.data_root, download=False, verify=verify)
        reference = load_cifar10("test", root=args.data_root, download=False, verify=verify)
        reference = reference.images
    else:
        fashion = args.dataset == "fashion-mnist"
        splits = [load_mnist(s, "grey", root=args.data_root, fashion=fashion, verify=verify)
                  for s in ("train", "val", "test")]  # fmt: skip
        data = ImageDataset(torch.cat([splits[0].images, splits[1].images]),
                            torch.cat([splits[0].labels, splits[1].labels]))  # fmt: skip
        reference = splits[2].images
        space = ev.mnist_feature_space(args.dataset, root=args.data_root, verify=verify)
    if args.train_size is not None:
        data = ImageDataset(data.images[: args.train_size], data.labels[: args.train_size])
    prepare_run_dir(out, args.fresh)
    save_options(out, RECIPE, args)
    every = args.metrics_every
    at = {e for e in range(1, args.epochs + 1) if every and e % every == 0} | {args.epochs}
    ctx = RunContext(
        name="train-gan", out=out, seed=args.seed, data_root=args.data_root, ops=args.ops,
        progress=not args.no_progress, device=args.device, fresh=args.fresh, verify=verify,
        trainer=trainer,
    )  # fmt: skip
    training = GANTraining(
        ctx, GAN(config, ops=args.ops), out, epochs=args.epochs, batch_size=args.batch_size,
        ema_decay=args.ema, evaluate=SampleQuality(space, reference[: args.n], args.n),
        evaluate_at=at, grids_at=grid_epochs(args.epochs),
        title=f"{config.arch} GAN, {config.loss}", seed=args.seed,
    )  # fmt: skip
    rows = training.fit(data)
    last = rows[-1] if rows else {}
    res = {
        "generator": str(out / "generator.pt"),
        "epochs": last.get("epoch"),
        "feature_net": space.name,
        **{k: last[k] for k in ("fid", "kid", "kid_std", "is") if k in last},
    }
    (out / "eval.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    return res


RECIPE = Recipe(
    name="train gan",
    help="train a GAN",
    add_arguments=add_arguments,
    run=run,
    epilog=RESUME_HELP,
    options_file="gan_args.json",
)
