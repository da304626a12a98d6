"""``dgm-ext train gan``: one GAN (MLP on MNIST-like data, DCGAN on CIFAR-10) into a run folder."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from dgm_ext.recipes.base import Recipe, save_options
from dgm_ext.recipes.datasets import add_data_options, check_data, load_training_data
from dgm_ext.recipes.options import (
    RESUME_HELP,
    add_common,
    add_trainer_options,
    add_training,
    check_counts,
    out_dir,
    run_context,
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
    add_data_options(p)
    p.add_argument(
        "--arch", default=None, choices=list(ARCHS), help="default: mlp, dcgan for RGB images"
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
        help="FID/KID/IS of --n samples every N epochs and at the end (mnist, fashion-mnist: "
        "the library's classifier; other data: the FID Inception-v3, skipped with a note "
        "when no weights file is given; default 0: only at the end)",
    )
    p.add_argument("--n", type=int, default=10_000, help="samples for the metrics")
    p.add_argument(
        "--inception-weights",
        default=None,
        help="FID Inception-v3 weights for RGB and folder data (default "
        "$DGM_EXT_INCEPTION_WEIGHTS; without either the metrics are skipped)",
    )


def _config(args: argparse.Namespace, image_shape: tuple[int, int, int], num_classes: int) -> Any:
    """The ``GANConfig`` of the options for images of ``image_shape`` (validated)."""
    from dgm_ext.gan import GANConfig

    return GANConfig(
        arch=args.arch if args.arch is not None else "dcgan" if image_shape[0] == 3 else "mlp",
        z_dim=args.z_dim,
        image_shape=image_shape,
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
        num_classes=num_classes if args.conditional else 0,
    )


def _feature_space(args: argparse.Namespace) -> tuple[Any, str | None]:
    """The metrics' feature network of ``--data`` and, when there is none, why: MNIST-like
    data use the library's classifier; other data the FID Inception-v3 from
    ``--inception-weights`` / ``$DGM_EXT_INCEPTION_WEIGHTS`` (a named file that is missing is
    an error; none named: no metrics, and the returned reason says how to get them)."""
    from dgm_ext.metrics import evaluate as ev

    if args.dataset in ("mnist", "fashion-mnist"):
        space = ev.mnist_feature_space(args.dataset, root=args.data_root,
                                       verify=not args.no_verify)  # fmt: skip
        return space, None
    weights = args.inception_weights or os.environ.get("DGM_EXT_INCEPTION_WEIGHTS")
    if not weights:
        return None, (
            f"{args.dataset} needs the FID Inception-v3 weights (pt_inception-2015-12-05-"
            "6726825d.pth from github.com/mseitzer/pytorch-fid/releases); pass "
            "--inception-weights FILE or set $DGM_EXT_INCEPTION_WEIGHTS to compute FID/KID/IS"
        )
    return ev.inception_feature_space(weights), None


def run(args: argparse.Namespace) -> dict:
    """Train, save ``generator.pt`` and sample grids, FID/KID/IS at the end (and every
    ``--metrics-every`` epochs)."""
    import torch

    from dgm_ext.data import ImageDataset
    from dgm_ext.experiments.common import prepare_run_dir
    from dgm_ext.experiments.gan_common import GANTraining, SampleQuality, grid_epochs
    from dgm_ext.gan import GAN

    check_data(args)
    # the options checked before any data is loaded (a folder's shape is known only then)
    _config(args, {"cifar10": (3, 32, 32)}.get(args.dataset, (1, 28, 28)), 10)
    trainer = trainer_options(args, default_step=False)
    check_counts(args, epochs=1, metrics_every=0, n=2, batch_size=1, train_size=1)
    if args.ema is not None and not 0 < args.ema < 1:
        raise ValueError(f"--ema must be in (0, 1), got {args.ema}")
    out = out_dir(args, "gan")
    space, skipped = _feature_space(args)  # a wrong weights file fails before the data loads
    data = load_training_data(args, "grey")
    config = _config(args, data.image_shape, data.num_classes)
    # every image of the data set trains a GAN (no validation split): train + val
    train = data.train
    if data.val is not data.test:
        train = ImageDataset(torch.cat([data.train.images, data.val.images]),
                             torch.cat([data.train.labels, data.val.labels]))  # fmt: skip
    if args.train_size is not None:
        train = ImageDataset(train.images[: args.train_size], train.labels[: args.train_size])
    reference = data.test.images
    if skipped:
        print(f"dgm-ext: sample-quality metrics skipped: {skipped}", file=sys.stderr)
    prepare_run_dir(out, args.fresh)
    save_options(out, RECIPE, args)
    every = args.metrics_every
    at = {e for e in range(1, args.epochs + 1) if every and e % every == 0} | {args.epochs}
    ctx = run_context(args, "train-gan", out, trainer)
    quality = SampleQuality(space, reference[: args.n], args.n) if space is not None else None
    training = GANTraining(
        ctx, GAN(config, ops=args.ops), out, epochs=args.epochs, batch_size=args.batch_size,
        ema_decay=args.ema, evaluate=quality, evaluate_at=at, grids_at=grid_epochs(args.epochs),
        title=f"{config.arch} GAN, {config.loss}", seed=args.seed,
    )  # fmt: skip
    rows = training.fit(train)
    last = rows[-1] if rows else {}
    res = {
        "generator": str(out / "generator.pt"),
        "epochs": last.get("epoch"),
        "data": data.name,
        "image_shape": list(data.image_shape),
        "feature_net": space.name if space is not None else None,
        **{k: last[k] for k in ("fid", "kid", "kid_std", "is") if k in last},
    }
    if skipped:
        res["metrics_skipped"] = skipped
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
