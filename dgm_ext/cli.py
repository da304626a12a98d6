"""Command line interface: ``dgm-ext`` / ``python -m dgm_ext``.

Subcommands::

    dgm-ext train vae [options]         train one VAE into a run directory
    dgm-ext eval CHECKPOINT [options]   ELBO, importance-sampled log p(x), bits/dim
    dgm-ext reproduce NAME [--quick]    run an experiment of SPEC §3 end to end
    dgm-ext list                        list the reproducible experiments

``train`` and ``reproduce`` into an ``--out`` that already holds a training run resume it
from its ``checkpoints/last.pt`` (and say so); ``--fresh`` moves such a folder aside to
``<out>.old-<timestamp>`` (nothing is deleted) and starts over.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="MNIST folder (default: $DGM_EXT_DATA)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--data-seed", type=int, default=0, help="seed of the static binarisation (default 0)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument(
        "--ops",
        default="fused",
        help="op backend: 'fused' (dgm_ext.ops, default) or 'reference' (pure PyTorch)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


_RESUME_HELP = (
    "an --out that already holds a run is resumed from its checkpoints/last.pt (the console "
    "says so); --fresh moves it aside to <out>.old-<timestamp> first (nothing is deleted) and "
    "starts over"
)


def _add_training(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default=None,
        help="training device, e.g. cpu, cuda, cuda:1 (default: cuda:$LOCAL_RANK when CUDA "
        "is available, else cpu)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start over when --out already exists: move it aside to <out>.old-<timestamp> "
        "(default: resume the run found there)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``dgm-ext``."""
    parser = argparse.ArgumentParser(prog="dgm-ext", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model")
    tsub = train.add_subparsers(dest="model", required=True)
    vae = tsub.add_parser("vae", help="train a VAE", epilog=_RESUME_HELP)
    _add_common(vae)
    _add_training(vae)
    vae.add_argument("--out", default=None, help="run directory (default runs/vae-<time>)")
    vae.add_argument("--arch", default="mlp", choices=["mlp", "mlp-deep", "conv"])
    vae.add_argument("--latent-dim", type=int, default=20)
    vae.add_argument("--hidden", type=int, default=None, help="hidden width of MLP nets")
    vae.add_argument(
        "--likelihood",
        default="bernoulli",
        choices=["bernoulli", "gaussian", "beta", "categorical"],
    )
    vae.add_argument("--categories", type=int, default=4, help="bins of the categorical")
    vae.add_argument(
        "--variant",
        default=None,
        choices=["grey", "static", "dynamic", "levels"],
        help="MNIST variant (default: static for bernoulli, grey otherwise)",
    )
    vae.add_argument("--decoder-shift", type=float, default=0.0, help="mlp-deep output shift")
    vae.add_argument("--flow-length", type=int, default=0, help="planar posterior layers")
    vae.add_argument("--epochs", type=int, default=10)
    vae.add_argument("--batch-size", type=int, default=128)
    vae.add_argument("--lr", type=float, default=1e-3)
    vae.add_argument("--patience", type=int, default=None, help="early stopping patience")
    vae.add_argument("--train-size", type=int, default=None, help="use the first N train images")
    vae.add_argument("--val-size", type=int, default=None, help="use the first N val images")
    vae.add_argument("--k", type=int, default=0, help="also report test log p(x) with K samples")

    ev = sub.add_parser("eval", help="evaluate a VAE checkpoint (model.pt or its run dir)")
    _add_common(ev)
    ev.add_argument("checkpoint", help="model.pt written by train/reproduce, or its folder")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--variant", default=None, choices=["grey", "static", "dynamic", "levels"])
    ev.add_argument("--k", type=int, default=200, help="importance samples (default 200)")
    ev.add_argument("--limit", type=int, default=None, help="evaluate the first N images")
    ev.add_argument("--batch-size", type=int, default=100)
    ev.add_argument("--json", default=None, help="also write the numbers to this JSON file")

    rep = sub.add_parser("reproduce", help="run an experiment of SPEC §3", epilog=_RESUME_HELP)
    _add_common(rep)
    _add_training(rep)
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

    sub.add_parser("list", help="list the reproducible experiments")
    return parser


def _setup(args: argparse.Namespace) -> None:
    import torch

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if getattr(args, "device", None) is not None:
        _check_device(args.device)


def _check_device(device: str) -> None:
    """Refuse a bad ``--device`` before any data is loaded (same rules as the trainer)."""
    import torch

    from dgm_ext.train import Trainer

    resolve = getattr(Trainer, "_resolve_device", None)  # refuses invisible CUDA ordinals
    try:
        torch.device(device)
        if resolve is not None:
            resolve(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device}: {exc}") from None


def _default_variant(likelihood: str) -> str:
    return {"bernoulli": "static", "categorical": "levels"}.get(likelihood, "grey")


def _cmd_train_vae(args: argparse.Namespace) -> int:
    from dgm_ext.experiments.common import (
        RunContext,
        default_run_dir,
        fit_model,
        load_splits,
        prepare_run_dir,
    )
    from dgm_ext.vae import (
        VAEConfig,
        build_vae,
        evaluate_elbo,
        evaluate_log_likelihood,
        save_vae,
    )

    out = Path(args.out) if args.out else default_run_dir("vae")
    ctx = RunContext(
        name="train-vae",
        out=out,
        seed=args.seed,
        data_seed=args.data_seed,
        data_root=args.data_root,
        ops=args.ops,
        progress=not args.no_progress,
        device=args.device,
        fresh=args.fresh,
    )
    variant = args.variant or _default_variant(args.likelihood)
    cfg = dict(
        arch=args.arch,
        latent_dim=args.latent_dim,
        hidden=args.hidden,
        likelihood=args.likelihood,
        categories=args.categories,
        decoder_shift=args.decoder_shift,
        flow_length=args.flow_length,
    )
    VAEConfig(**cfg)  # validate before loading data
    prepare_run_dir(out, args.fresh)
    (out / "vae_args.json").write_text(json.dumps(vars(args), indent=2), encoding="utf-8")
    train, val, test = load_splits(ctx, variant, args.train_size, args.val_size, None)
    model = build_vae(ops=args.ops, **cfg)
    t0 = time.perf_counter()
    fit_model(ctx, model, train, val, out, args.epochs, args.batch_size, args.lr, args.patience)
    save_vae(model, out / "model.pt")
    res = {
        "train_time_s": time.perf_counter() - t0,
        "variant": variant,
        "ops": model.ops.__name__,
        "device": str(model.device),
    }
    res["val"] = evaluate_elbo(model, val)
    if args.k > 0:
        res["test_log_px"] = evaluate_log_likelihood(model, test, k=args.k)
    (out / "eval.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    print(json.dumps(res, indent=2))
    print(f"model saved to {out / 'model.pt'}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from dgm_ext.data import load_mnist
    from dgm_ext.vae import evaluate_elbo, evaluate_log_likelihood, load_vae

    path = Path(args.checkpoint)
    if path.is_dir():
        path = path / "model.pt"
    model = load_vae(path, ops=args.ops)
    variant = args.variant or _default_variant(model.config.likelihood)
    if model.config.likelihood == "categorical" and args.variant is None:
        variant = "grey"
    data = load_mnist(split=args.split, variant=variant, root=args.data_root, seed=args.data_seed)
    res: dict = {
        "checkpoint": str(path),
        "split": args.split,
        "variant": variant,
        "ops": model.ops.__name__,
    }
    res["elbo"] = evaluate_elbo(model, data, limit=args.limit)
    if args.k > 0:
        res["log_px"] = evaluate_log_likelihood(
            model, data, k=args.k, batch_size=args.batch_size, limit=args.limit
        )
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from dgm_ext.experiments import get_experiment, run_experiment

    get_experiment(args.name)  # fail early with the list of names
    res = run_experiment(
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
    )
    print(f"wall time {res['wall_time_s']:.1f} s")
    return 0


def _cmd_list() -> int:
    from dgm_ext.experiments import EXPERIMENTS

    for name in sorted(EXPERIMENTS):
        print(f"{name:18s} {EXPERIMENTS[name].summary}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dgm-ext``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        if args.command == "list":
            return _cmd_list()
        _setup(args)
        if args.command == "train":
            return _cmd_train_vae(args)
        if args.command == "eval":
            return _cmd_eval(args)
        return _cmd_reproduce(args)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"dgm-ext: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
