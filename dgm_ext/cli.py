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
                                        a folder of images or of a data split (mnist:train)
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
    _add_compile(vae)

    gan = tsub.add_parser("gan", help="train a GAN", epilog=_RESUME_HELP)
    _add_common(gan)
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
    _add_common(planar)
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

    add_train_parser(tsub, _add_common, _add_training, _RESUME_HELP, _add_compile)

    ev = sub.add_parser(
        "eval",
        help="evaluate a VAE checkpoint, a folder of images or a data split",
        epilog=_EVAL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(ev)
    ev.add_argument(
        "checkpoint",
        metavar="SOURCE",
        help="model.pt (VAE or RealNVP) written by train/reproduce (or its run folder), a GAN "
        "generator.pt (or "
        "its train-gan run folder), a folder of PNG/JPEG "
        "images, or a data split NAME:SPLIT (mnist, fashion-mnist, cifar10; e.g. mnist:train)",
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
        help="comma-separated subset of fid,kid,is (default for images and data splits: all "
        "three; for a VAE checkpoint: none)",
    )
    ev.add_argument("--n", type=int, default=10_000, help="images compared (default 10000)")
    ev.add_argument(
        "--dataset",
        default=None,
        choices=["mnist", "fashion-mnist", "cifar10"],
        help="reference data set (default: the source's, else mnist for 1-channel images and "
        "cifar10 for RGB); 1-channel images use its classifier as the feature network",
    )
    ev.add_argument("--ref-stats", default=None, help="FID against this .npz (mu, sigma)")
    ev.add_argument("--save-stats", default=None, help="write the images' (mu, sigma) .npz")
    ev.add_argument(
        "--inception-weights",
        default=None,
        help="FID Inception weights file for RGB images (default $DGM_EXT_INCEPTION_WEIGHTS)",
    )
    ev.add_argument("--kid-subsets", type=int, default=100)
    ev.add_argument("--kid-subset-size", type=int, default=1000)
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


def _check_device(device: str) -> None:
    """Refuse a bad ``--device`` before any data is loaded (same rules as the trainer)."""
    from dgm_ext.train import resolve_device

    try:
        resolve_device(device)  # a bad string, or a CUDA ordinal that is not visible
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
        compile=args.compile,
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


def _cmd_train_gan(args: argparse.Namespace) -> int:
    import torch

    from dgm_ext.data import ImageDataset, load_cifar10, load_mnist
    from dgm_ext.experiments.common import RunContext, default_run_dir, prepare_run_dir
    from dgm_ext.experiments.gan_common import GANTraining, SampleQuality, grid_epochs
    from dgm_ext.gan import GAN, GANConfig
    from dgm_ext.metrics import evaluate as ev

    rgb = args.dataset == "cifar10"
    config = GANConfig(
        arch=args.arch or ("dcgan" if rgb else "mlp"),
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
    )  # validates before any data is loaded
    for name, low in (("epochs", 1), ("metrics_every", 0), ("n", 2), ("batch_size", 1)):
        if getattr(args, name) < low:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be >= {low}, got {getattr(args, name)}")
    if args.ema is not None and not 0 < args.ema < 1:
        raise ValueError(f"--ema must be in (0, 1), got {args.ema}")
    if rgb:
        space = ev.inception_feature_space(args.inception_weights)  # fails early without weights
        data = load_cifar10("train", root=args.data_root, download=False)
        reference = load_cifar10("test", root=args.data_root, download=False).images
    else:
        fashion = args.dataset == "fashion-mnist"
        splits = [load_mnist(s, "grey", root=args.data_root, fashion=fashion)
                  for s in ("train", "val", "test")]  # fmt: skip
        data = ImageDataset(torch.cat([splits[0].images, splits[1].images]),
                            torch.cat([splits[0].labels, splits[1].labels]))  # fmt: skip
        reference = splits[2].images
        space = ev.mnist_feature_space(args.dataset, root=args.data_root)
    if args.train_size is not None:
        data = ImageDataset(data.images[: args.train_size], data.labels[: args.train_size])
    out = Path(args.out) if args.out else default_run_dir("gan")
    prepare_run_dir(out, args.fresh)
    (out / "gan_args.json").write_text(json.dumps(vars(args), indent=2), encoding="utf-8")
    every = args.metrics_every
    at = {e for e in range(1, args.epochs + 1) if every and e % every == 0} | {args.epochs}
    ctx = RunContext(
        name="train-gan", out=out, seed=args.seed, data_root=args.data_root, ops=args.ops,
        progress=not args.no_progress, device=args.device, fresh=args.fresh,
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
    import math

    import torch

    from dgm_ext.experiments.common import default_run_dir, prepare_run_dir
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
    for name, low in (("k", 1), ("steps", 1), ("batch_size", 1), ("eval_samples", 2)):
        if getattr(args, name) < low:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be >= {low}, got {getattr(args, name)}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
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
    out = Path(args.out) if args.out else default_run_dir("planar")
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
sample quality (--metrics fid,kid,is): N images (--n, default 10000) from the source are
compared with the first N images of the reference split (--split) of --dataset, or with
--ref-stats for FID. Feature networks: 1-channel 28x28 images use the library's classifier of
the data set (trained and cached on first use; 128-d 'penultimate' layer), RGB images the FID
Inception-v3 (2048-d pool3) from --inception-weights. Numbers from different feature networks
are not comparable.

examples:
  dgm-ext eval mnist:train --metrics fid,kid,is        # the floor: train vs test images
  dgm-ext eval runs/vae-elbo --metrics fid --n 10000   # ELBO and FID of 10000 samples
  dgm-ext eval runs/gan/generator.pt --metrics fid,kid # a GAN's samples (default: all three)
  dgm-ext eval runs/realnvp --split test               # test bits/dim of a RealNVP
  dgm-ext eval samples/ --dataset cifar10 --inception-weights pt_inception-2015-12-05.pth
"""

_DATASETS = ("mnist", "fashion-mnist", "cifar10")


def _data_spec(source: str) -> tuple[str, str] | None:
    """``"mnist:train"`` -> ``("mnist", "train")`` when source names a data split."""
    if Path(source).exists() or ":" not in source:
        return None
    name, _, split = source.partition(":")
    if name not in _DATASETS:
        raise ValueError(f"data source {source!r}: data set must be one of {_DATASETS}")
    return name, split


def _split_images(dataset: str, split: str, root: str | None, n: int):
    from dgm_ext.data import load_cifar10, load_mnist

    if dataset == "cifar10":
        data = load_cifar10(split, root=root, download=False)
    else:
        data = load_mnist(split, "grey", root=root, fashion=dataset == "fashion-mnist")
    return data.images[:n]


def _sample_quality(args: argparse.Namespace, images, dataset: str | None) -> dict:
    from dgm_ext.metrics import evaluate as ev

    metrics = ev.parse_metrics(args.metrics or ",".join(ev.METRICS))
    if args.n < 2:
        raise ValueError(f"--n must be at least 2, got {args.n}")
    images = images[: args.n]
    channels = int(images.shape[1])
    dataset = args.dataset or dataset or ("cifar10" if channels == 3 else "mnist")
    if channels == 1:
        if dataset == "cifar10":
            raise ValueError("1-channel images cannot be compared with cifar10")
        space = ev.mnist_feature_space(dataset, root=args.data_root)
    else:
        space = ev.inception_feature_space(args.inception_weights)
    reference = None
    if args.ref_stats is None or "kid" in metrics:
        reference = _split_images(dataset, args.split, args.data_root, args.n)
    res = ev.sample_quality(
        images,
        space,
        reference,
        ref_stats=args.ref_stats,
        metrics=metrics,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        save_stats_to=args.save_stats,
    )
    if reference is not None:
        res["reference"] = f"{dataset}:{args.split}"
    if res["n"] < args.n:
        res["note"] = f"only {res['n']} images were available (asked for --n {args.n})"
    return res


def _gan_file(source: Path) -> Path | None:
    """The GAN file (``save_gan`` format) that ``source`` names: the file itself, or
    ``generator.pt`` in a ``train gan`` run directory; ``None`` otherwise."""
    from dgm_ext.gan.gan import is_gan_file

    path = source / "generator.pt" if source.is_dir() else source
    return path if path.is_file() and is_gan_file(path) else None


def _eval_gan(args: argparse.Namespace, path: Path) -> int:
    """FID/KID/IS (default: all three) of ``--n`` samples of a GAN generator."""
    import torch

    from dgm_ext.gan import load_gan

    model = load_gan(path, ops=args.ops)
    torch.manual_seed(args.seed)
    samples = model.sample(args.n)
    dataset = args.dataset or ("cifar10" if model.config.image_shape[0] == 3 else "mnist")
    res = {
        "checkpoint": str(path),
        "samples": f"{args.n} generator samples of z ~ N(0, I), seed {args.seed}",
        "config": model.config.to_dict(),
        "sample_quality": _sample_quality(args, samples, dataset),
    }
    return _report(res, args.json)


def _cmd_eval(args: argparse.Namespace) -> int:
    from dgm_ext._cli_realnvp import eval_realnvp, realnvp_file
    from dgm_ext.data import load_mnist
    from dgm_ext.vae import evaluate_elbo, evaluate_log_likelihood, load_vae

    spec = _data_spec(args.checkpoint)
    source = Path(args.checkpoint)
    gan_file = _gan_file(source) if spec is None else None
    if gan_file is not None:
        return _eval_gan(args, gan_file)
    flow_file = realnvp_file(source) if spec is None else None
    if flow_file is not None:
        return _report(eval_realnvp(args, flow_file, _sample_quality), args.json)
    if spec is not None or (source.is_dir() and not (source / "model.pt").exists()):
        if spec is not None:
            images = _split_images(spec[0], spec[1], args.data_root, args.n)
            dataset = spec[0]
        else:
            from dgm_ext.metrics import load_image_folder

            images, dataset = load_image_folder(source, limit=args.n), None
        res = {"source": args.checkpoint, **_sample_quality(args, images, dataset)}
        return _report(res, args.json)

    path = source / "model.pt" if source.is_dir() else source
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
    if args.metrics:
        import torch

        torch.manual_seed(args.seed)
        samples = torch.cat(
            [model.sample(min(1000, args.n - i)).cpu() for i in range(0, args.n, 1000)]
        )
        res["samples"] = "decoder means of z ~ N(0, I)"
        res["sample_quality"] = _sample_quality(args, samples.clamp(0, 1), "mnist")
    return _report(res, args.json)


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
            if args.model == "planar":
                return _cmd_train_planar(args)
            if args.model == "realnvp":
                from dgm_ext._cli_realnvp import cmd_train_realnvp

                return cmd_train_realnvp(args)
            return _cmd_train_gan(args) if args.model == "gan" else _cmd_train_vae(args)
        if args.command == "eval":
            return _cmd_eval(args)
        return _cmd_reproduce(args)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"dgm-ext: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
