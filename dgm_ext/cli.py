"""Command line interface: ``dgm-ext`` / ``python -m dgm_ext``.

Subcommands::

    dgm-ext train vae [options]         train one VAE into a run directory
    dgm-ext train gan [options]         train one GAN (MLP on MNIST, DCGAN on CIFAR-10)
    dgm-ext train planar [options]      fit a planar flow to 2-D data (ML) or a density (KL)
    dgm-ext train realnvp [options]     train a RealNVP (MLP or multi-scale) on 8-bit images
    dgm-ext eval SOURCE [options]       ELBO, importance-sampled log p(x), bits/dim of a VAE
                                        checkpoint; bits/dim of a RealNVP model.pt;
                                        FID/KID/IS (--metrics) of their samples, of
                                        a GAN generator (generator.pt or a train-gan run), of
                                        a folder of images or of a data split (mnist:train);
                                        a trainer checkpoint with the config beside it
    dgm-ext eval A B [options]          FID/KID/IS/precision/recall of A against B: folders
                                        of images, data splits, models, statistics files
    dgm-ext sample MODEL --n N --out D  a model's samples as PNG files and an .npz
    dgm-ext reproduce NAME [--quick]    run an experiment of SPEC §3 end to end
    dgm-ext list                        list the reproducible experiments

``train`` and ``reproduce`` into an ``--out`` that already holds a training run resume it
from its ``checkpoints/last.pt`` (and say so); ``--fresh`` moves such a folder aside to
``<out>.old-<timestamp>`` (nothing is deleted) and starts over; ``--config RUN`` starts from
the options a ``train`` command recorded in RUN.

The commands are the recipes of :mod:`dgm_ext.recipes` (also callable from Python); this
module only builds the parser from them, prints what they return and turns errors into one
line and an exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``dgm-ext``, built from :data:`dgm_ext.recipes.RECIPES`."""
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and each recipe's subparser, by recipe name."""
    from dgm_ext.recipes import RECIPES

    parser = argparse.ArgumentParser(prog="dgm-ext", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model")
    tsub = train.add_subparsers(dest="model", required=True)
    commands: dict[str, argparse.ArgumentParser] = {}
    for name, recipe in RECIPES.items():
        words = name.split()
        group = tsub if words[0] == "train" else sub
        p = group.add_parser(
            words[-1],
            help=recipe.help,
            description=recipe.description,
            epilog=recipe.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter
            if recipe.raw_help
            else argparse.HelpFormatter,
        )
        commands[name] = recipe.parser(p)
    sub.add_parser("list", help="list the reproducible experiments")
    return parser, commands


def _recipe_name(args: argparse.Namespace) -> str:
    return f"train {args.model}" if args.command == "train" else args.command


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; with ``--config RUN`` the options recorded in RUN become the defaults
    and the command line is parsed again, so options given here win."""
    from dgm_ext.recipes import RECIPES
    from dgm_ext.recipes.base import load_options

    parser, _ = _build()
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is None:
        return args
    recipe = RECIPES[_recipe_name(args)]
    try:
        recorded = load_options(args.config, recipe)
    except ValueError as exc:
        parser.exit(2, f"dgm-ext: error: {exc}\n")
    known = {a.dest for a in recipe.parser()._actions}
    defaults = {k: v for k, v in recorded.items() if k in known}
    reparser, commands = _build()
    commands[recipe.name].set_defaults(**defaults)
    return reparser.parse_args(argv)


def _run_list() -> int:
    from dgm_ext.experiments import EXPERIMENTS

    for name in sorted(EXPERIMENTS):
        print(f"{name:18s} {EXPERIMENTS[name].summary}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from dgm_ext.recipes import RECIPES
    from dgm_ext.recipes.options import setup

    try:
        if args.command == "list":
            return _run_list()
        setup(args)
        res = RECIPES[_recipe_name(args)].run(args)
        if args.command == "reproduce":
            print(f"wall time {res['wall_time_s']:.1f} s")
        else:
            print(json.dumps(res, indent=2))
        return 0
    except (ValueError, TypeError, OSError) as exc:  # OSError: FileNotFoundError and the like
        print(f"dgm-ext: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # NonFiniteLossError: names the step and the checkpoint
        print(f"dgm-ext: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C: where training stood, and how to resume
        from dgm_ext.train import TrainingInterrupted

        what = str(exc) if isinstance(exc, TrainingInterrupted) else "interrupted"
        print(f"dgm-ext: {what}", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dgm-ext``; returns the process exit code."""
    args = _parse(list(argv) if argv is not None else None)
    with warnings.catch_warnings():  # restores showwarning on return (in-process callers)
        show = warnings.showwarning

        def show_warning(message, category, filename, lineno, file=None, line=None):
            # a data file's warning is about the user's files: one line, no source location
            from dgm_ext.data import ChecksumWarning
            from dgm_ext.metrics.folder import SkippedImageWarning

            if issubclass(category, ChecksumWarning | SkippedImageWarning):
                print(f"dgm-ext: warning: {message}", file=sys.stderr if file is None else file)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = show_warning
        return _run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
