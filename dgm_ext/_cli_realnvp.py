"""``dgm-ext train realnvp`` and ``dgm-ext eval`` of a RealNVP file (bits/dim, sample quality).

Kept beside :mod:`dgm_ext.cli` (which parses the common options and dispatches here).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from dgm_ext._cli_options import add_trainer_options, trainer_options

__all__ = ["add_train_parser", "cmd_train_realnvp", "eval_realnvp"]

DATASETS = ("mnist", "fashion-mnist", "cifar10")


def add_train_parser(
    tsub: Any, add_common: Any, add_training: Any, epilog: str, add_compile: Any
) -> argparse.ArgumentParser:
    """Add ``train realnvp`` to the ``train`` subparsers."""
    p = tsub.add_parser(
        "realnvp",
        help="train a RealNVP (MLP or multi-scale) on dequantised images",
        epilog=epilog,
    )
    add_common(p)
    add_training(p)
    p.add_argument("--out", default=None, help="run directory (default runs/realnvp-<time>)")
    p.add_argument("--dataset", default="mnist", choices=list(DATASETS))
    p.add_argument("--arch", default="mlp", choices=["mlp", "multiscale"])
    p.add_argument("--couplings", type=int, default=8, help="MLP: coupling layers (default 8)")
    p.add_argument("--hidden", type=int, default=1024, help="MLP: hidden width (default 1024)")
    p.add_argument("--scales", type=int, default=2, help="multiscale: scales (default 2)")
    p.add_argument("--channels", type=int, default=32, help="multiscale: conv width (default 32)")
    p.add_argument("--blocks", type=int, default=2, help="multiscale: residual blocks (default 2)")
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="logit transform alpha (default 1e-5 for MNIST, 0.05 for CIFAR-10)",
    )
    p.add_argument("--epochs", type=int, default=17)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    add_trainer_options(p, grad_clip=5.0)
    p.add_argument("--train-size", type=int, default=None, help="use the first N train images")
    p.add_argument("--val-size", type=int, default=None, help="use the first N val images")
    add_compile(p)
    return p


def _splits(dataset: str, root: str | None, verify: bool = True) -> tuple[Any, Any, Any]:
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
    if n < 1:
        raise ValueError(f"sizes must be >= 1, got {n}")
    return ImageDataset(ds.images[:n], ds.labels[:n], ds.variant, ds.transform, ds.name)


def cmd_train_realnvp(args: argparse.Namespace) -> int:
    """Train one RealNVP into ``--out``; writes model.pt, metrics, grids and eval.json."""
    from dgm_ext.experiments.common import (
        RunContext,
        check_run_dir,
        default_run_dir,
        prepare_run_dir,
    )
    from dgm_ext.experiments.gan_common import grid_epochs
    from dgm_ext.experiments.realnvp_mnist import FlowTraining, epoch_seconds
    from dgm_ext.flows.image import evaluate_bits_per_dim
    from dgm_ext.flows.realnvp import RealNVPConfig, build_realnvp

    rgb = args.dataset == "cifar10"
    config = RealNVPConfig(
        arch=args.arch,
        image_shape=(3, 32, 32) if rgb else (1, 28, 28),
        couplings=args.couplings,
        hidden=args.hidden,
        scales=args.scales,
        channels=args.channels,
        blocks=args.blocks,
        alpha=args.alpha if args.alpha is not None else (0.05 if rgb else 1e-5),
    )  # validates before any data is loaded
    for name in ("epochs", "batch_size", "train_size", "val_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    trainer = trainer_options(args)
    if not 0.0 <= config.alpha < 0.5:
        raise ValueError(f"--alpha must be in [0, 0.5), got {config.alpha}")
    out = check_run_dir(args.out if args.out is not None else default_run_dir("realnvp"))
    model = build_realnvp(config, ops=args.ops)
    train, val, test = _splits(args.dataset, args.data_root, verify=not args.no_verify)
    train, val = _cut(train, args.train_size), _cut(val, args.val_size)
    prepare_run_dir(out, args.fresh)  # options and data first: nothing is created before
    (out / "realnvp_args.json").write_text(json.dumps(vars(args), indent=2), encoding="utf-8")
    ctx = RunContext(
        name="train-realnvp",
        out=out,
        seed=args.seed,
        data_root=args.data_root,
        ops=args.ops,
        progress=not args.no_progress,
        device=args.device,
        fresh=args.fresh,
        compile=args.compile,
        verify=not args.no_verify,
        trainer=trainer,
    )
    training = FlowTraining(
        ctx,
        model,
        out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        grad_clip=trainer["grad_clip"],
        grids_at=grid_epochs(args.epochs),
        title=f"RealNVP {args.arch}, {args.dataset}",
    )
    rows = training.fit(train, val)
    res = {
        "model": str(out / "model.pt"),
        "epochs": len(rows),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds_per_epoch": epoch_seconds(rows),
        "val": evaluate_bits_per_dim(model, val.images),
        "test": evaluate_bits_per_dim(model, test.images),
    }
    (out / "eval.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    print(json.dumps(res, indent=2))
    return 0


def eval_realnvp(args: argparse.Namespace, model: Any, about: dict, sample_quality: Any) -> dict:
    """bits/dim of a data split under the flow ``model`` (and FID/KID/IS of its samples with
    ``--metrics``); ``about`` (where the model came from) heads the result;
    ``sample_quality(args, images, dataset)`` is the CLI's metric helper."""
    import torch

    from dgm_ext.flows.image import evaluate_bits_per_dim

    rgb = model.config.image_shape[0] == 3
    dataset = args.dataset if args.dataset is not None else "cifar10" if rgb else "mnist"
    if (dataset == "cifar10") != rgb:
        raise ValueError(
            f"--dataset {dataset} does not match the model's images {model.config.image_shape}"
        )
    train, val, test = _splits(dataset, args.data_root, verify=not args.no_verify)
    images = {"train": train, "val": val, "test": test}[args.split].images
    res: dict[str, Any] = {
        **about,
        "config": model.config.to_dict(),
        "split": args.split,
        "dataset": dataset,
        "bits_per_dim": evaluate_bits_per_dim(
            model, images, batch_size=args.batch_size, seed=args.seed, limit=args.limit
        ),
    }
    if args.metrics is not None:
        torch.manual_seed(args.seed)
        model.eval()
        with torch.no_grad():
            samples = torch.cat(
                [model.sample_images(min(500, args.n - i)).cpu() for i in range(0, args.n, 500)]
            )
        res["samples"] = "model samples at temperature 1, clamped to [0, 1]"
        res["sample_quality"] = sample_quality(args, samples, dataset)
    return res
