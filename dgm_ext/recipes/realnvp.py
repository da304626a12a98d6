"""``dgm-ext train realnvp``: one RealNVP (MLP or multi-scale) on dequantised 8-bit images."""

from __future__ import annotations

import argparse
import json
from typing import Any

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

__all__ = ["RECIPE", "level_splits"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``train realnvp``."""
    from dgm_ext.flows.realnvp import ARCHS

    add_common(p, data_seed=False)  # 8-bit levels: no binarisation, so no --data-seed
    add_training(p)
    p.add_argument("--out", default=None, help="run directory (default runs/realnvp-<time>)")
    add_data_options(p)
    p.add_argument("--arch", default="mlp", choices=list(ARCHS))
    p.add_argument("--couplings", type=int, default=8, help="MLP: coupling layers (default 8)")
    p.add_argument("--hidden", type=int, default=1024, help="MLP: hidden width (default 1024)")
    p.add_argument("--scales", type=int, default=2, help="multiscale: scales (default 2)")
    p.add_argument("--channels", type=int, default=32, help="multiscale: conv width (default 32)")
    p.add_argument("--blocks", type=int, default=2, help="multiscale: residual blocks (default 2)")
    p.add_argument(
        "--conditional",
        action="store_true",
        help="class-conditional RealNVP: the one-hot label into every coupling net",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="logit transform alpha (default 1e-5 for grey images, 0.05 for RGB)",
    )
    p.add_argument("--epochs", type=int, default=17)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    add_trainer_options(p, grad_clip=5.0)
    p.add_argument("--train-size", type=int, default=None, help="use the first N train images")
    p.add_argument("--val-size", type=int, default=None, help="use the first N val images")
    add_compile(p)


def level_splits(dataset: str, root: str | None, verify: bool = True) -> tuple[Any, Any, Any]:
    """(train, val, test) of 8-bit levels; CIFAR-10 has no validation split: its test split
    serves as both."""
    from dgm_ext.data import load_cifar10, load_mnist

    if dataset == "cifar10":
        kw = {"variant": "levels", "root": root, "download": False, "verify": verify}
        test = load_cifar10("test", **kw)
        return load_cifar10("train", **kw), test, test
    fashion = dataset == "fashion-mnist"
    return tuple(
        load_mnist(s, "levels", root=root, fashion=fashion, verify=verify)
        for s in ("train", "val", "test")
    )  # type: ignore[return-value]


def _cut(ds: Any, n: int | None) -> Any:
    from dgm_ext.data import ImageDataset

    if n is None or n >= len(ds):
        return ds
    return ImageDataset(ds.images[:n], ds.labels[:n], ds.variant, ds.transform, ds.name)


def _config(
    args: argparse.Namespace, image_shape: tuple[int, int, int], num_classes: int = 0
) -> Any:
    """The ``RealNVPConfig`` of the options for images of ``image_shape`` (validated;
    ``num_classes`` of the data, used with ``--conditional``)."""
    from dgm_ext.flows.realnvp import RealNVPConfig

    rgb = image_shape[0] == 3
    config = RealNVPConfig(
        arch=args.arch,
        image_shape=image_shape,
        couplings=args.couplings,
        hidden=args.hidden,
        scales=args.scales,
        channels=args.channels,
        blocks=args.blocks,
        alpha=args.alpha if args.alpha is not None else (0.05 if rgb else 1e-5),
        num_classes=num_classes if args.conditional else 0,
    )
    if not 0.0 <= config.alpha < 0.5:
        raise ValueError(f"--alpha must be in [0, 0.5), got {config.alpha}")
    return config


def _labels(model: Any, split: Any) -> Any:
    """The split's labels for a class-conditional flow (scored on bits/dim given y)."""
    return split.labels if model.num_classes else None


def run(args: argparse.Namespace) -> dict:
    """Train, save ``model.pt``, metrics and grids; val and test bits/dim."""
    from dgm_ext.experiments.common import prepare_run_dir
    from dgm_ext.experiments.gan_common import grid_epochs
    from dgm_ext.experiments.realnvp_mnist import FlowTraining, epoch_seconds
    from dgm_ext.flows.image import evaluate_bits_per_dim
    from dgm_ext.flows.realnvp import build_realnvp

    check_data(args)
    check_counts(args, epochs=1, batch_size=1, train_size=1, val_size=1)
    check_rates(args, "lr")
    trainer = trainer_options(args)
    # the options checked before any data is loaded (a folder's shape is known only then)
    _config(args, {"cifar10": (3, 32, 32)}.get(args.dataset, (1, 28, 28)))
    out = out_dir(args, "realnvp")
    data = load_training_data(args, "levels")
    config = _config(args, data.image_shape, data.num_classes)
    model = build_realnvp(config, ops=args.ops)
    train, val, test = data.train, data.val, data.test
    prepare_run_dir(out, args.fresh)  # options and data first: nothing is created before
    save_options(out, RECIPE, args)
    ctx = run_context(args, "train-realnvp", out, trainer)
    training = FlowTraining(
        ctx,
        model,
        out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        grad_clip=trainer["grad_clip"],
        grids_at=grid_epochs(args.epochs),
        title=f"RealNVP {args.arch}, {data.name}",
    )
    rows = training.fit(train, val)
    res = {
        "model": str(out / "model.pt"),
        "data": data.name,
        "image_shape": list(data.image_shape),
        "epochs": len(rows),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds_per_epoch": epoch_seconds(rows),
        "val": evaluate_bits_per_dim(model, val.images, labels=_labels(model, val)),
        "test": evaluate_bits_per_dim(model, test.images, labels=_labels(model, test)),
    }
    (out / "eval.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    return res


RECIPE = Recipe(
    name="train realnvp",
    help="train a RealNVP (MLP or multi-scale) on dequantised images",
    add_arguments=add_arguments,
    run=run,
    epilog=RESUME_HELP,
    options_file="realnvp_args.json",
)
