"""``dgm-ext reproduce NAME``: one experiment of SPEC §3 end to end (the experiment registry
of :mod:`dgm_ext.experiments` does the work)."""

from __future__ import annotations

import argparse

from dgm_ext.recipes.base import Recipe
from dgm_ext.recipes.options import RESUME_HELP, add_common, add_training

__all__ = ["RECIPE"]


def add_arguments(rep: argparse.ArgumentParser) -> None:
    """Options of ``reproduce``."""
    add_common(rep)
    add_training(rep)
    rep.add_argument("name", help="experiment name (see `dgm-ext list`)")
    rep.add_argument("--quick", action="store_true", help="small version (< 1 minute on CPU)")
    rep.add_argument("--out", default=None, help="run directory (default runs/<name>-<time>)")
    rep.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    rep.add_argument("--k", type=int, default=None, help="override importance samples K")
    rep.add_argument("--train-size", type=int, default=None, help="use the first N train images")
    rep.add_argument("--val-size", type=int, default=None, help="use the first N val images")
    rep.add_argument(
        "--checkpoint",
        default=None,
        help="reuse a trained model.pt instead of training (vae-no-encoder; other experiments "
        "refuse it)",
    )
    rep.add_argument(
        "--run",
        default=None,
        help="one preset of the experiment (cifar10-gan: jsd-1, ..., w1-3; planar-2d: ml, kl "
        "or targets; vae-flow: flow lengths, e.g. 0,10,40)",
    )
    rep.add_argument(
        "--ema", type=float, default=None, help="generator EMA decay (GAN experiments)"
    )


def run(args: argparse.Namespace) -> dict:
    """Run the experiment; its result (``wall_time_s`` included)."""
    from dgm_ext.experiments import get_experiment, run_experiment

    get_experiment(args.name)  # fail early with the list of names
    return run_experiment(
        args.name,
        out=args.out,
        quick=args.quick,
        seed=args.seed,
        epochs=args.epochs,
        k=args.k,
        data_root=args.data_root,
        ops=args.ops,
        progress=not args.no_progress,
        checkpoint=args.checkpoint,
        train_size=args.train_size,
        val_size=args.val_size,
        data_seed=args.data_seed,
        device=args.device,
        fresh=args.fresh,
        extra={k: v for k, v in (("run", args.run), ("ema", args.ema)) if v is not None},
        verify=not args.no_verify,
    )


RECIPE = Recipe(
    name="reproduce",
    help="run an experiment of SPEC §3",
    add_arguments=add_arguments,
    run=run,
    epilog=RESUME_HELP.split("; --config")[0],
)
