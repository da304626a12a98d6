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
``<out>.old-<timestamp>`` (nothing is deleted) and starts over.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from dgm_ext._cli_options import add_trainer_options, trainer_options

__all__ = ["build_parser", "main"]


def _add_common(
    p: argparse.ArgumentParser,
    *,
    data: bool = True,
    data_seed: bool = True,
    progress: bool = True,
) -> None:
    """Options shared by the commands; each command adds only those it reads."""
    if data:
        p.add_argument(
            "--data-root",
            default=None,
            help="data folder holding mnist/, fashion-mnist/ (and cifar-10-batches-py/) "
            "(default: $DGM_EXT_DATA)",
        )
        p.add_argument(
            "--no-verify",
            action="store_true",
            help="use data files whose md5 is not the published one (with a warning; numbers "
            "are then not comparable with published ones)",
        )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    if data_seed:
        p.add_argument(
            "--data-seed", type=int, default=0, help="seed of the static binarisation (default 0)"
        )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument(
        "--ops",
        default="fused",
        help="op backend: 'fused' (dgm_ext.ops, default) or 'reference' (pure PyTorch)",
    )
    if progress:
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


_COMPILE_MODES = ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


def _add_compile(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=_COMPILE_MODES,
        metavar="MODE",
        help="compile the training step with torch.compile (MODE: default, reduce-overhead "
        "for CUDA graphs on a GPU, max-autotune, max-autotune-no-cudagraphs); the NaN guard "
        "stays on (TrainerConfig.compile_step)",
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
    add_trainer_options(vae)
    _add_compile(vae)

    gan = tsub.add_parser("gan", help="train a GAN", epilog=_RESUME_HELP)
    _add_common(gan, data_seed=False)  # grey or RGB images: no binarisation
    _add_training(gan)
    gan.add_argument("--out", default=None, help="run directory (default runs/gan-<time>)")
    gan.add_argument("--dataset", default="mnist", choices=list(_DATASETS))
    gan.add_argument(
        "--arch", default=None, choices=["mlp", "dcgan"], help="default: mlp, dcgan for cifar10"
    )
    gan.add_argument(
        "--loss",
        default="jsd-nonsaturating",
        choices=["jsd-nonsaturating", "jsd-saturating", "w1", "hinge"],
    )
    gan.add_argument("--penalty", default="none", choices=["none", "r1", "gp"])
    gan.add_argument("--penalty-weight", type=float, default=0.0)
    gan.add_argument("--critic-steps", type=int, default=1, help="critic steps per generator step")
    gan.add_argument("--lr-generator", type=float, default=2e-4)
    gan.add_argument("--lr-critic", type=float, default=2e-4)
    gan.add_argument("--betas", type=float, nargs=2, default=(0.5, 0.999), metavar=("B1", "B2"))
    gan.add_argument("--z-dim", type=int, default=100)
    gan.add_argument("--width", type=int, default=128, help="DCGAN width")
    gan.add_argument("--spectral-norm", action="store_true", help="DCGAN critic")
    gan.add_argument(
        "--sync-bn",
        action="store_true",
        help="SyncBatchNorm in the generator (torchrun on GPUs: global batch statistics)",
    )
    gan.add_argument("--ema", type=float, default=None, help="generator EMA decay")
    gan.add_argument(
        "--conditional",
        action="store_true",
        help="class-conditional GAN: labels into the generator (conditional BatchNorm) and "
        "the critic (projection discriminator)",
    )
    add_trainer_options(gan)
    gan.add_argument("--epochs", type=int, default=10)
    gan.add_argument("--batch-size", type=int, default=64)
    gan.add_argument("--train-size", type=int, default=None, help="use the first N images")
    gan.add_argument(
        "--metrics-every",
        type=int,
        default=0,
        help="FID/KID/IS of --n samples every N epochs and at the end (MNIST-like data: the "
        "library's classifier; default 0: only at the end)",
    )
    gan.add_argument("--n", type=int, default=10_000, help="samples for the metrics")
    gan.add_argument(
        "--inception-weights",
        default=None,
        help="FID Inception-v3 weights for cifar10 (default $DGM_EXT_INCEPTION_WEIGHTS)",
    )

    planar = tsub.add_parser(
        "planar",
        help="fit a planar flow to a 2-D data set (ml) or density (kl)",
        description="One planar-flow fit (SPEC §3 planar-2d setup): maximum likelihood on exact "
        "samples of --target (--mode ml) or reverse KL to its density (--mode kl); writes "
        "flow.pt, metrics.jsonl, eval.json (held-out NLL ± SE beside the entropy floor, or "
        "KL(q||p) ± SE) and figures. Runs on the CPU.",
        epilog="an --out that already holds this fit (same settings) is evaluated again "
        "without training; one with other settings is refused unless --fresh moves it aside "
        "to <out>.old-<timestamp> (nothing is deleted)",
    )
    _add_common(planar, data=False, data_seed=False)  # 2-D densities: no image data
    planar.add_argument("--out", default=None, help="run directory (default runs/planar-<time>)")
    planar.add_argument(
        "--mode",
        default="ml",
        choices=["ml", "kl"],
        help="ml: maximum likelihood on samples; kl: reverse KL to the density (default ml)",
    )
    planar.add_argument(
        "--target",
        "--data",
        dest="target",
        default="arcs",
        help="density / data set: arcs, sine, u1, u2, u3, u4 (default arcs)",
    )
    planar.add_argument("--k", type=int, default=8, help="planar layers (default 8)")
    planar.add_argument("--steps", type=int, default=20_000, help="RMSprop steps (default 20000)")
    planar.add_argument("--batch-size", type=int, default=128)
    planar.add_argument("--lr", type=float, default=5e-4, help="RMSprop learning rate")
    planar.add_argument(
        "--init-scale", type=float, default=0.01, help="u, w ~ N(0, s^2), b = 0 (default 0.01)"
    )
    planar.add_argument(
        "--eval-samples", type=int, default=100_000, help="samples of the NLL / KL estimate"
    )
    planar.add_argument(
        "--fresh",
        action="store_true",
        help="start over when --out already exists: move it aside to <out>.old-<timestamp>",
    )

    from dgm_ext._cli_realnvp import add_train_parser

    # 8-bit levels: no binarisation, so no --data-seed
    add_train_parser(
        tsub, partial(_add_common, data_seed=False), _add_training, _RESUME_HELP, _add_compile
    )

    ev = sub.add_parser(
        "eval",
        help="evaluate a model, or compare image folders, data splits, models and statistics",
        epilog=_EVAL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(ev, progress=False)
    ev.add_argument(
        "checkpoint",
        metavar="A",
        help="model.pt (VAE or RealNVP) written by train/reproduce (or its run folder), a GAN "
        "generator.pt (or its train-gan run folder), a training checkpoint "
        "(checkpoints/last.pt: its weights with the model config found in its run folder), a "
        "folder of PNG/JPEG/WebP images (subfolders included), a data split NAME:SPLIT "
        "(mnist, fashion-mnist, cifar10; e.g. mnist:train) or, with B, an .npz of (mu, sigma)",
    )
    ev.add_argument(
        "reference",
        metavar="B",
        nargs="?",
        default=None,
        help="compare A with B (the reference: the 'real' set of precision/recall): a folder, "
        "a data split, a model or an .npz of (mu, sigma); default: --dataset's --split",
    )
    ev.add_argument(
        "--split",
        default="test",
        choices=["train", "val", "test"],
        help="data split for the ELBO and the reference images of --metrics (default test)",
    )
    ev.add_argument(
        "--metrics",
        default=None,
        help="comma-separated subset of fid,kid,is,precision,recall,density,coverage; prdc "
        "names the last four (default for images, data splits and B: fid,kid,is; for a "
        "model alone: none)",
    )
    ev.add_argument(
        "--n",
        type=int,
        default=None,
        help="use the first N images of each folder or data split (default: all; a message "
        "says when fewer are used than exist) and N samples of a model (default 10000)",
    )
    ev.add_argument(
        "--dataset",
        default=None,
        choices=["mnist", "fashion-mnist", "cifar10"],
        help="reference data set and feature network (default: the sources', else mnist for "
        "grey 28x28 images and cifar10 for the rest): mnist and fashion-mnist use their "
        "classifier, cifar10 the FID Inception-v3",
    )
    ev.add_argument("--ref-stats", default=None, help="FID against this .npz (mu, sigma)")
    ev.add_argument("--save-stats", default=None, help="write A's (mu, sigma) as pytorch-fid .npz")
    ev.add_argument(
        "--inception-weights",
        default=None,
        help="FID Inception weights file for RGB images (default $DGM_EXT_INCEPTION_WEIGHTS)",
    )
    ev.add_argument(
        "--resize",
        default="pytorch-fid",
        choices=["pytorch-fid", "tf", "clean"],
        help="how images are resized to the feature network's input (recorded with the "
        "result): pytorch-fid (bilinear, default), tf (TensorFlow 1 bilinear, as "
        "torch-fidelity and the original FID code), clean (PIL bicubic, as clean-fid)",
    )
    ev.add_argument(
        "--device",
        default=None,
        help="device of the feature network, and of a model sampled as A or B (default: cpu)",
    )
    ev.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes decoding image files (default: min(4, CPU cores); 0: none)",
    )
    ev.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor write cached features of folders and data splits",
    )
    ev.add_argument("--kid-subsets", type=int, default=100)
    ev.add_argument("--kid-subset-size", type=int, default=1000)
    ev.add_argument(
        "--nearest-k", type=int, default=3, help="k of precision/recall/density/coverage"
    )
    ev.add_argument("--variant", default=None, choices=["grey", "static", "dynamic", "levels"])
    ev.add_argument("--k", type=int, default=200, help="importance samples (default 200)")
    ev.add_argument("--limit", type=int, default=None, help="evaluate the first N images")
    ev.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per batch (default: 50 for features, 100 for log p(x))",
    )
    ev.add_argument("--json", default=None, help="also write the numbers to this JSON file")

    sa = sub.add_parser(
        "sample",
        help="write a model's samples as PNG files and an .npz (planar flows: a CSV)",
        description="Draw --n samples of a trained model into --out: PNG files 000000.png, "
        "... and samples.npz (key 'images', float32 (N, C, H, W) in [0, 1]) for image models "
        "(VAE decoder means, GAN, RealNVP), samples.csv (x, y) and samples.npz (key "
        "'points') for a planar flow. The PNG files are 8-bit: what any FID tool reads.",
    )
    _add_common(sa, data=False, data_seed=False, progress=False)
    sa.add_argument("model", metavar="MODEL", help="model file or run folder (as eval)")
    sa.add_argument("--n", type=int, required=True, help="number of samples")
    sa.add_argument("--out", required=True, help="folder to write (created; must be empty)")
    sa.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="scale of the latent draws z ~ N(0, T^2 I) (default 1)",
    )
    sa.add_argument("--device", default=None, help="sampling device (default: cpu)")
    sa.add_argument("--batch-size", type=int, default=500, help="samples per batch")

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
    rep.add_argument(
        "--run",
        default=None,
        help="one preset of the experiment (cifar10-gan: jsd-1, ..., w1-3; planar-2d: ml, kl "
        "or targets; vae-flow: flow lengths, e.g. 0,10,40)",
    )
    rep.add_argument(
        "--ema", type=float, default=None, help="generator EMA decay (GAN experiments)"
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
    _check_ops(args.ops)


def _check_ops(ops: str) -> None:
    """Refuse an ``--ops`` that names no op backend before any data is loaded."""
    from dgm_ext.ops import resolve_ops

    try:
        resolve_ops(ops)  # "fused", "reference" or an importable module name
    except ImportError:
        raise ValueError(
            f"--ops must be 'fused' or 'reference' (or an importable op module), got {ops!r}"
        ) from None


def _check_device(device: str) -> None:
    """Refuse a bad ``--device`` before any data is loaded (same rules as the trainer)."""
    from dgm_ext.train import resolve_device

    try:
        resolve_device(device)  # a bad string, or a CUDA ordinal that is not visible
    except RuntimeError as exc:
        raise ValueError(f"--device {device}: {exc}") from None


def _check_counts(args: argparse.Namespace, **lows: int) -> None:
    """Refuse ``--name`` values below ``lows[name]`` (``None``, an unset option, passes)."""
    for name, low in lows.items():
        v = getattr(args, name)
        if v is not None and v < low:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {v}")


def _check_rates(args: argparse.Namespace, *names: str) -> None:
    """Refuse learning rates that are not finite numbers > 0."""

    for name in names:
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number > 0, got {v}")


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    """``--out`` (checked: it can be created) or ``runs/<name>-<time>``; creates nothing."""
    from dgm_ext.experiments.common import check_run_dir, default_run_dir

    return check_run_dir(args.out if args.out is not None else default_run_dir(name))


def _default_variant(likelihood: str) -> str:
    return {"bernoulli": "static", "categorical": "levels"}.get(likelihood, "grey")


_VAE_KEYS = ("arch", "latent_dim", "hidden", "likelihood", "categories", "decoder_shift",
             "flow_length")  # fmt: skip


def _vae_config(options: dict) -> dict:
    """The ``VAEConfig`` keywords among ``train vae``'s options (also read back from the
    ``vae_args.json`` of its run folder)."""
    return {k: options[k] for k in _VAE_KEYS}


def _cmd_train_vae(args: argparse.Namespace) -> int:
    from dgm_ext.experiments.common import RunContext, fit_model, load_splits, prepare_run_dir
    from dgm_ext.vae import (
        VAEConfig,
        build_vae,
        evaluate_elbo,
        evaluate_log_likelihood,
        save_vae,
    )

    variant = args.variant if args.variant is not None else _default_variant(args.likelihood)
    cfg = _vae_config(vars(args))
    VAEConfig(**cfg)  # options first: nothing is loaded or written before they pass
    _check_counts(args, epochs=0, batch_size=1, patience=1, train_size=1, val_size=1, k=0)
    _check_rates(args, "lr")
    out = _out_dir(args, "vae")
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
        compile=args.compile,
        verify=not args.no_verify,
        trainer=trainer_options(args),
    )
    train, val, test = load_splits(ctx, variant, args.train_size, args.val_size, None)
    prepare_run_dir(out, args.fresh)  # the data is there: now the run folder
    (out / "vae_args.json").write_text(json.dumps(vars(args), indent=2), encoding="utf-8")
    model = build_vae(ops=args.ops, **cfg)
    t0 = time.perf_counter()
    rows = fit_model(
        ctx, model, train, val, out, args.epochs, args.batch_size, args.lr, args.patience
    )
    save_vae(model, out / "model.pt")
    res = {
        "epochs": len(rows),  # trained (0 with --epochs 0: the untrained model is evaluated)
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


def _cmd_train_gan(args: argparse.Namespace) -> int:
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
    _check_counts(args, epochs=1, metrics_every=0, n=2, batch_size=1, train_size=1)
    if args.ema is not None and not 0 < args.ema < 1:
        raise ValueError(f"--ema must be in (0, 1), got {args.ema}")
    out = _out_dir(args, "gan")
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
        space = ev.mnist_feature_space(args.dataset, root=args.data_root)
    if args.train_size is not None:
        data = ImageDataset(data.images[: args.train_size], data.labels[: args.train_size])
    prepare_run_dir(out, args.fresh)
    (out / "gan_args.json").write_text(json.dumps(vars(args), indent=2), encoding="utf-8")
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
    print(json.dumps(res, indent=2))
    return 0


def _cmd_train_planar(args: argparse.Namespace) -> int:

    import torch

    from dgm_ext.experiments.common import prepare_run_dir
    from dgm_ext.experiments.planar_2d import plot_fits, plot_losses
    from dgm_ext.flows.densities import get_density
    from dgm_ext.flows.fit import (
        PlanarFitConfig,
        evaluate_kl,
        evaluate_nll,
        fit_planar,
        load_planar,
        save_planar,
    )

    density = get_density(args.target, "--target")
    _check_counts(args, k=1, steps=1, batch_size=1, eval_samples=2)
    _check_rates(args, "lr")
    if not (math.isfinite(args.init_scale) and args.init_scale >= 0):
        raise ValueError(f"--init-scale must be a finite number >= 0, got {args.init_scale}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.ops not in ("fused", "reference"):
        raise ValueError(f"--ops must be 'fused' or 'reference' for planar flows, got {args.ops!r}")
    config = PlanarFitConfig(
        args.mode, args.target, args.k, steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, ops=args.ops, init_scale=args.init_scale,
        log_every=max(1, min(100, args.steps // 20)),
    )  # fmt: skip
    if args.threads is None:
        torch.set_num_threads(1)  # 2-D batches of 128: threads only add overhead
    out = _out_dir(args, "planar")
    path = out / "flow.pt"
    prepare_run_dir(out, args.fresh)
    result = None
    if path.is_file():
        old = load_planar(path)
        if old.config != config:
            raise ValueError(
                f"--out: {out} holds a planar fit with other settings ({old.config.name}, "
                f"{old.config.steps} steps, seed {old.config.seed}); pass a new --out or --fresh"
            )
        print(f"{path} holds this fit already: evaluating it again (--fresh to start over)")
        result = old
    (out / "planar_args.json").write_text(json.dumps(vars(args), indent=2), encoding="utf-8")
    if result is None:

        def report(step: int, loss: float) -> None:
            if not args.no_progress and (step % max(1, args.steps // 10) < config.log_every):
                print(f"step {step}/{args.steps}: loss {loss:.4f}", flush=True)

        result = fit_planar(config, progress=report)
        save_planar(result, path)
        with open(out / "metrics.jsonl", "w", encoding="utf-8") as f:
            for step, loss in zip(result.curve_steps, result.curve_loss, strict=True):
                f.write(json.dumps({"step": step, "loss": loss}) + "\n")
    torch.manual_seed(args.seed + 1)
    if args.mode == "ml":
        res = evaluate_nll(result.flow, args.target, n=args.eval_samples)
        res.pop("values")
    else:
        res = evaluate_kl(result.flow, args.target, n=args.eval_samples)
    res = {"fit": config.name, **res, "train_loss": result.final_loss,
           "train_s": result.seconds, "flow": str(path)}  # fmt: skip
    figs = out / "figures"
    plot_fits(figs / "fit.png", args.mode, args.target, {args.k: result}, 150, 3000)
    offsets = {args.target: density.log_z(wall=True)} if args.mode == "kl" else {}
    floors = {args.target: density.entropy()}
    plot_losses(figs / "loss.png", args.mode, {config.name: result}, offsets, floors)
    (out / "eval.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    print(json.dumps(res, indent=2))
    return 0


_EVAL_HELP = """\
sample quality (--metrics fid,kid,is,prdc): A is compared with B, or, without B, with the
--split of --dataset (or --ref-stats for FID). Folders are read recursively (PNG, JPEG, WebP;
any sizes; grey and colour converted to the feature network's channels; undecodable files
skipped with a warning and counted); all images are used unless --n says otherwise. Feature
networks: grey 28x28 images and MNIST-like data sets use the library's classifier of the data
set (128-d 'penultimate' layer), everything else the FID Inception-v3 (2048-d pool3) from
--inception-weights. --resize picks the resize convention (recorded with the result). Features
of folders and data splits are cached by content: an evaluation against the same reference
again costs only the new images. Numbers from different feature networks or resize
conventions are not comparable.

examples:
  dgm-ext eval mnist:train --metrics fid,kid,is --n 10000   # the floor: train vs test images
  dgm-ext eval samples/ cifar10:train --inception-weights pt_inception-2015-12-05-6726825d.pth
  dgm-ext eval samples/ real/ --metrics fid,prdc --device cuda --workers 8
  dgm-ext eval runs/vae-elbo --metrics fid --n 10000   # ELBO and FID of 10000 samples
  dgm-ext eval runs/gan/generator.pt --metrics fid,kid # a GAN's samples (default: all three)
  dgm-ext eval runs/realnvp --split test               # test bits/dim of a RealNVP
"""

_DATASETS = ("mnist", "fashion-mnist", "cifar10")
_MODEL_SAMPLES = 10_000  # samples drawn from a model when --n is not given
_FEATURE_BATCH = 50  # pytorch-fid's default batch for feature passes

# the end of every message about a SOURCE that eval cannot read
_EVAL_TAKES = (
    "eval takes a model.pt written by train vae, train realnvp or reproduce, a GAN "
    "generator.pt, the run folder holding one, a folder of images, a data split such as "
    "mnist:test, or (as A or B of two) an .npz of statistics"
)


def _data_spec(source: str) -> tuple[str, str] | None:
    """``"mnist:train"`` -> ``("mnist", "train")`` when source names a data split."""
    if Path(source).exists() or ":" not in source:
        return None
    name, _, split = source.partition(":")
    if name not in _DATASETS:
        raise ValueError(f"data source {source!r}: data set must be one of {_DATASETS}")
    return name, split


def _split_images(dataset: str, split: str, root: str | None, n: int | None, verify: bool = True):
    from dgm_ext.data import load_cifar10, load_mnist

    if dataset == "cifar10":
        data = load_cifar10(split, root=root, download=False, verify=verify)
    else:
        fashion = dataset == "fashion-mnist"
        data = load_mnist(split, "grey", root=root, fashion=fashion, verify=verify)
    return data.images if n is None else data.images[:n]


class _Source:
    """One side of a comparison: a folder, a data split, model samples or a statistics file.

    ``channels`` (1 or 3) and ``dataset`` hint at the feature network."""

    def __init__(self, kind: str, label: str, **kw) -> None:
        self.kind, self.label = kind, label
        self.path: Path | None = kw.get("path")
        self.dataset: str | None = kw.get("dataset")
        self.split: str | None = kw.get("split")
        self.images = kw.get("images")
        self.channels: int | None = kw.get("channels")


def _read_model(path: Path, ops: str, planar: bool = False) -> tuple[str, object, dict]:
    """(kind, model, about) of a model file; one-line errors for other files."""
    from dgm_ext._model_files import describe, file_kind, read_model_file

    try:
        blob = read_model_file(path)  # one line for files that are not ours, no torch advice
    except ValueError as exc:
        raise ValueError(f"{exc}; {_EVAL_TAKES}") from None
    kind = file_kind(blob)
    if kind == "checkpoint":
        return _from_checkpoint(path, blob, ops)
    if kind in ("vae", "gan", "realnvp"):
        return kind, _load_model(path, kind, ops), {"checkpoint": str(path)}
    if kind == "planar" and planar:
        from dgm_ext.flows import load_planar

        return kind, load_planar(path, ops=ops), {"checkpoint": str(path)}
    raise ValueError(f"{path} is {describe(blob)}, not a model eval reads; {_EVAL_TAKES}")


def _model_samples(
    kind: str, model, n: int, *, temperature: float = 1.0, batch_size: int = 500, device=None
):
    """``n`` images (N, C, H, W) in [0, 1] on the CPU from a VAE (decoder means), GAN or
    RealNVP, latent draws z ~ N(0, T^2 I)."""
    import torch

    if device is not None:
        model.to(device)
    model.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, n, batch_size):
            k = min(batch_size, n - i)
            if kind == "gan":
                x = model.decode(model.sample_z(k) * temperature)
            elif kind == "vae":
                z = torch.randn(k, model.latent_dim, device=model.device) * temperature
                x = model.sample(z=z).clamp(0, 1)
            else:  # realnvp
                x = model.sample_images(k, temperature)
            parts.append(x.detach().float().cpu())
    return torch.cat(parts)


def _resolve_source(args: argparse.Namespace, text: str) -> _Source:
    """What ``text`` (A or B of eval) names; model files are sampled here (--n, --seed)."""
    from dgm_ext.metrics.folder import peek_image

    spec = _data_spec(text)
    if spec is not None:
        ch = 3 if spec[0] == "cifar10" else 1
        return _Source("split", text, dataset=spec[0], split=spec[1], channels=ch)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder; {_EVAL_TAKES}")
    if path.is_file() and path.suffix.lower() == ".npz":
        return _Source("stats", text, path=path)
    model_path = _model_file(path)
    if model_path is None:
        c, h, w = peek_image(path)
        ch = 1 if c == 1 and (h, w) == (28, 28) else 3
        return _Source("folder", text, path=path, channels=ch)
    import torch

    kind, model, _ = _read_model(model_path, args.ops)
    n = args.n if args.n is not None else _MODEL_SAMPLES
    torch.manual_seed(args.seed)
    images = _model_samples(kind, model, n, device=args.device)
    label = f"{text} ({n} samples, seed {args.seed})"
    return _Source("images", label, images=images, channels=int(images.shape[1]))


def _feature_space(args: argparse.Namespace, sources: list[_Source], dataset: str | None):
    """The feature network: --dataset, else the sources' data set, else by channels."""
    from dgm_ext.metrics import evaluate as ev

    hints = [s.channels for s in sources if s.channels is not None]
    channels = 3 if 3 in hints else 1 if hints else 3
    if args.dataset is not None:
        dataset = args.dataset
    elif dataset is None:
        dataset = next((s.dataset for s in sources if s.dataset), None)
    if dataset is None:
        dataset = "cifar10" if channels == 3 else "mnist"
    if dataset == "cifar10":
        return ev.inception_feature_space(args.inception_weights, device=args.device), dataset
    return ev.mnist_feature_space(dataset, root=args.data_root, device=args.device), dataset


def _features(args: argparse.Namespace, src: _Source, space, notes: list[str], probs: bool):
    """Features of a source (cached for folders and splits unless --no-cache); class
    probabilities with ``probs`` (for IS)."""
    from dgm_ext.metrics.features import folder_features, tensor_features

    common = {"resize": args.resize, "batch_size": args.feature_batch_size, "probs": probs}
    if src.kind == "folder":
        fs = folder_features(
            src.path, space, n=args.n, workers=args.workers, cache=not args.no_cache,
            label=src.label, **common,
        )  # fmt: skip
        used = fs.n + len(fs.skipped)
    elif src.kind == "split":
        images = _split_images(
            src.dataset, src.split, args.data_root, None, verify=not args.no_verify
        )
        avail = int(images.shape[0])
        images = images[: args.n] if args.n is not None else images
        fs = tensor_features(
            images, space, label=src.label, n_available=avail, cache=not args.no_cache, **common
        )
        used = fs.n
    else:
        return tensor_features(src.images, space, label=src.label, **common)
    if fs.n_available is not None and used < fs.n_available:
        note = f"using {used} of the {fs.n_available} images of {src.label} (--n {args.n})"
        print(f"dgm-ext: {note}", file=sys.stderr)
        notes.append(note)
    return fs


def _quality(
    args: argparse.Namespace, a: _Source, b: _Source | None, dataset: str | None = None
) -> dict:
    """The metrics (--metrics, default fid,kid,is) of A against B, or against --dataset's
    --split (or --ref-stats for FID) when B is None."""
    from dgm_ext.metrics import evaluate as ev
    from dgm_ext.metrics.features import compare, feature_statistics_blocked
    from dgm_ext.metrics.frechet import frechet_distance_from_stats
    from dgm_ext.metrics.stats import load_stats, save_stats

    metrics = ev.parse_metrics(args.metrics if args.metrics is not None else ev.METRICS)
    ref_stats = args.ref_stats
    if a.kind == "stats":  # FID is symmetric: the statistics file is the reference
        if b is None:
            raise ValueError(f"{a.label} is a statistics file: compare it with B")
        a, b, ref_stats = b, None, str(a.path)
    if b is not None and b.kind == "stats":
        b, ref_stats = None, str(b.path)
    needs_features = [m for m in metrics if m != "is" and not (m == "fid" and ref_stats)]
    if needs_features and b is None and args.reference is not None:
        raise ValueError(
            f"{', '.join(needs_features)} need(s) the reference's features; a statistics file "
            "holds only mu and sigma (pass the reference's images or data split)"
        )
    if a.kind == "stats":  # two statistics files: FID without any network
        if metrics != ("fid",):
            raise ValueError("two statistics files give FID only (--metrics fid)")
        mu1, s1 = load_stats(a.path)
        mu2, s2 = load_stats(ref_stats)
        fid = frechet_distance_from_stats(mu1, s1, mu2, s2)
        return {"source": a.label, "ref_stats": ref_stats, "fid": fid}
    if b is None and needs_features:
        ds = args.dataset or a.dataset or dataset
        if ds is None:
            ds = "cifar10" if a.channels == 3 else "mnist"
        ch = 3 if ds == "cifar10" else 1
        b = _Source("split", f"{ds}:{args.split}", dataset=ds, split=args.split, channels=ch)
    space, _ = _feature_space(args, [s for s in (a, b) if s is not None], dataset)
    notes: list[str] = []
    fa = _features(args, a, space, notes, probs="is" in metrics)
    res: dict = {"source": a.label, "n": fa.n, **ev.describe_space(space, args.resize)}
    fb = None
    if b is not None:
        fb = _features(args, b, space, notes, probs=False)
        res["reference"], res["n_ref"] = b.label, fb.n
    for side, fs in (("", fa), ("_ref", fb)):
        if fs is not None and fs.skipped:
            res[f"skipped{side}"] = len(fs.skipped)
            res[f"skipped{side}_files"] = [f"{p}: {why}" for p, why in fs.skipped[:20]]
        if fs is not None and fs.cached:
            res[f"cached{side}"] = True
    if args.save_stats is not None:
        save_stats(args.save_stats, *feature_statistics_blocked(fa.features))
    res.update(
        compare(
            fa,
            fb,
            metrics,
            ref_stats=ref_stats,
            kid_subsets=args.kid_subsets,
            kid_subset_size=args.kid_subset_size,
            nearest_k=args.nearest_k,
        )
    )
    if notes:
        res["notes"] = notes
    return res


def _sample_quality(args: argparse.Namespace, images, dataset: str | None) -> dict:
    """FID/KID/IS of a model's ``images`` against --dataset's --split (models' evaluators)."""
    label = f"{int(images.shape[0])} model samples"
    ch = int(images.shape[1])
    src = _Source("images", label, images=images, channels=ch, dataset=dataset)
    res = _quality(args, src, None, dataset)
    del res["source"]
    return res


def _eval_gan(args: argparse.Namespace, model, about: dict) -> int:
    """FID/KID/IS (default: all three) of ``--n`` samples of a GAN generator."""
    import torch

    torch.manual_seed(args.seed)
    if args.device is not None:
        model.to(args.device)
    samples = model.sample(args.n)
    if args.dataset is not None:
        dataset = args.dataset
    else:
        dataset = "cifar10" if model.config.image_shape[0] == 3 else "mnist"
    res = {
        **about,
        "samples": f"{args.n} generator samples of z ~ N(0, I), seed {args.seed}",
        "config": model.config.to_dict(),
        "sample_quality": _sample_quality(args, samples, dataset),
    }
    return _report(res, args.json)


def _eval_vae(args: argparse.Namespace, model, about: dict) -> int:
    """ELBO (and importance-sampled log p(x) with --k > 0) of a data split under a VAE, and
    FID/KID/IS of its samples with --metrics."""
    from dgm_ext.data import load_mnist
    from dgm_ext.vae import evaluate_elbo, evaluate_log_likelihood

    if args.variant is not None:
        variant = args.variant
    elif model.config.likelihood == "categorical":
        variant = "grey"  # the categorical likelihood bins grey levels itself
    else:
        variant = _default_variant(model.config.likelihood)
    data = load_mnist(
        split=args.split, variant=variant, root=args.data_root, seed=args.data_seed,
        verify=not args.no_verify,
    )  # fmt: skip
    res: dict = {**about, "split": args.split, "variant": variant, "ops": model.ops.__name__}
    res["elbo"] = evaluate_elbo(model, data, limit=args.limit)
    if args.k > 0:
        res["log_px"] = evaluate_log_likelihood(
            model, data, k=args.k, batch_size=args.batch_size, limit=args.limit
        )
    if args.metrics is not None:
        import torch

        torch.manual_seed(args.seed)
        samples = torch.cat(
            [model.sample(min(1000, args.n - i)).cpu() for i in range(0, args.n, 1000)]
        )
        res["samples"] = "decoder means of z ~ N(0, I)"
        res["sample_quality"] = _sample_quality(args, samples.clamp(0, 1), "mnist")
    return _report(res, args.json)


def _check_eval_options(args: argparse.Namespace) -> None:
    """Refuse bad options before any model or data is loaded."""
    import os

    from dgm_ext.metrics.evaluate import parse_metrics

    _check_counts(
        args, n=2, k=0, limit=1, batch_size=1, kid_subsets=1, kid_subset_size=1, workers=0,
        nearest_k=1,
    )  # fmt: skip
    if args.metrics is not None:
        parse_metrics(args.metrics)  # "" or unknown names: refused, not read as "all"
    for flag, value in (("--json", args.json), ("--save-stats", args.save_stats)):
        if value is None:
            continue
        target = Path(value)
        if target.is_dir():
            raise ValueError(f"{flag} {value} is a folder; pass a file name")
        if not target.parent.is_dir():
            raise ValueError(f"{flag} {value}: the folder {target.parent} does not exist")
    if args.workers is None:
        args.workers = min(4, os.cpu_count() or 1)
    args.feature_batch_size = args.batch_size if args.batch_size is not None else _FEATURE_BATCH
    if args.batch_size is None:
        args.batch_size = 100  # log p(x) and bits/dim batches


def _model_file(source: Path) -> Path | None:
    """The model file ``source`` names: the file itself; in a run folder its generator.pt,
    model.pt, flow.pt or (training not finished) checkpoints/last.pt; ``None`` for a folder
    without any of them (a folder of images)."""
    if not source.is_dir():
        return source
    for name in ("generator.pt", "model.pt", "flow.pt", "checkpoints/last.pt"):
        if (source / name).is_file():
            return source / name
    return None


def _load_model(path: Path, kind: str, ops: str):
    from dgm_ext.flows.realnvp import load_realnvp
    from dgm_ext.gan import load_gan
    from dgm_ext.vae import load_vae

    return {"vae": load_vae, "gan": load_gan, "realnvp": load_realnvp}[kind](path, ops=ops)


def _from_checkpoint(path: Path, blob: dict, ops: str) -> tuple[str, object, dict]:
    """(kind, model, about) for a trainer checkpoint: the model is rebuilt from the config
    beside it (the model file of its run folder, or train vae's vae_args.json) and given the
    checkpoint's weights; one-line ``ValueError`` when no matching config is found."""
    from dgm_ext._model_files import file_kind, read_model_file
    from dgm_ext.vae import VAE, VAEConfig

    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    # reproduce writes <out>/model.pt (or model-X.pt) beside the trainer's <out>/train(-X)/
    looked = [run / "model.pt", run / "generator.pt", run / "vae_args.json"]
    if run.name == "train" or run.name.startswith("train-"):
        looked.append(run.parent / f"model{run.name[len('train') :]}.pt")
    state = blob.get("model")
    epoch = (blob.get("trainer") or {}).get("epoch")
    for candidate in looked:
        if not candidate.is_file():
            continue
        try:
            if candidate.suffix == ".json":
                options = json.loads(candidate.read_text(encoding="utf-8"))
                kind, model = "vae", VAE(VAEConfig(**_vae_config(options)), ops=ops)
            else:
                kind = file_kind(read_model_file(candidate))
                if kind not in ("vae", "gan", "realnvp"):
                    continue
                model = _load_model(candidate, kind, ops)
            model.load_state_dict(state)  # a config that does not fit these weights: next
        except (ValueError, TypeError, KeyError, RuntimeError, OSError):
            continue
        about = {"checkpoint": str(path), "trained_epochs": epoch, "model_config": str(candidate)}
        return kind, model, about
    raise ValueError(
        f"{path} is a training checkpoint, and no model config matching it was found beside it "
        f"(looked for {', '.join(str(p) for p in looked)}); pass its run folder once training "
        f"has written the model file; {_EVAL_TAKES}"
    )


def _cmd_eval(args: argparse.Namespace) -> int:
    from dgm_ext._cli_realnvp import eval_realnvp

    _check_eval_options(args)
    if args.reference is not None:  # eval A B: two sources compared
        a = _resolve_source(args, args.checkpoint)
        b = _resolve_source(args, args.reference)
        return _report(_quality(args, a, b), args.json)
    spec = _data_spec(args.checkpoint)
    source = Path(args.checkpoint)
    if spec is None and not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder; {_EVAL_TAKES}")
    path = _model_file(source) if spec is None else None
    if path is None:  # a folder or a data split against --dataset's --split
        return _report(_quality(args, _resolve_source(args, args.checkpoint), None), args.json)
    if source.suffix.lower() == ".npz":
        raise ValueError(f"{source} is a statistics file: compare it with B (eval A B)")
    kind, model, about = _read_model(path, args.ops)
    if args.n is None:
        args.n = _MODEL_SAMPLES  # samples of the model, and at most that many reference images
    if kind == "gan":
        return _eval_gan(args, model, about)
    if kind == "realnvp":
        return _report(eval_realnvp(args, model, about, _sample_quality), args.json)
    return _eval_vae(args, model, about)


def _write_pngs(images, out: Path) -> None:
    """``images`` (N, C, H, W) in [0, 1] as 8-bit PNG files 000000.png, ... in ``out``."""
    import numpy as np
    import torch
    from PIL import Image

    a = (images.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    width = max(6, len(str(len(a) - 1)))
    for i, img in enumerate(a):
        if img.shape[0] == 1:
            pic = Image.fromarray(img[0])
        else:
            pic = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)))
        pic.save(out / f"{i:0{width}d}.png")


def _cmd_sample(args: argparse.Namespace) -> int:
    """``dgm-ext sample MODEL --n N --out DIR``: PNG files and an .npz (planar flows: CSV)."""

    import numpy as np
    import torch

    _check_counts(args, n=1, batch_size=1)
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise ValueError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder")
    source = Path(args.model)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    path = _model_file(source)
    if path is None:
        raise ValueError(f"{source} holds no generator.pt, model.pt or flow.pt")
    kind, model, about = _read_model(path, args.ops, planar=True)
    torch.manual_seed(args.seed)
    res = {**about, "kind": kind, "n": args.n, "temperature": args.temperature,
           "seed": args.seed, "out": str(out)}  # fmt: skip
    if kind == "planar":
        flow = model.flow.to(args.device) if args.device is not None else model.flow
        with torch.no_grad():
            pts = torch.cat(
                [flow.sample(min(args.batch_size, args.n - i), args.temperature).cpu()
                 for i in range(0, args.n, args.batch_size)]
            ).double().numpy()  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        np.savetxt(out / "samples.csv", pts, delimiter=",", header="x,y", comments="")
        np.savez(out / "samples.npz", points=pts)
        res["files"] = ["samples.csv", "samples.npz"]
    else:
        images = _model_samples(
            kind, model, args.n, temperature=args.temperature, batch_size=args.batch_size,
            device=args.device,
        )  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        _write_pngs(images, out)
        np.savez(out / "samples.npz", images=images.numpy().astype(np.float32))
        res["image_shape"] = list(images.shape[1:])
        res["files"] = f"{args.n} PNG files and samples.npz"
    (out / "sample.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    print(json.dumps(res, indent=2))
    return 0


def _report(res: dict, json_path: str | None) -> int:
    text = json.dumps(res, indent=2)
    print(text)
    if json_path:
        Path(json_path).write_text(text, encoding="utf-8")
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
        extra={k: v for k, v in (("run", args.run), ("ema", args.ema)) if v is not None},
        verify=not args.no_verify,
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


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "list":
            return _cmd_list()
        _setup(args)
        if args.command == "train":
            if args.model == "planar":
                return _cmd_train_planar(args)
            if args.model == "realnvp":
                from dgm_ext._cli_realnvp import cmd_train_realnvp

                return cmd_train_realnvp(args)
            return _cmd_train_gan(args) if args.model == "gan" else _cmd_train_vae(args)
        if args.command == "eval":
            return _cmd_eval(args)
        if args.command == "sample":
            return _cmd_sample(args)
        return _cmd_reproduce(args)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
