"""``dgm-ext eval A [B]``: a model's likelihood numbers, and sample quality (FID, KID, IS,
precision/recall, density/coverage) of folders, data splits, models and statistics files."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from dgm_ext.recipes.base import Recipe
from dgm_ext.recipes.options import DATASETS, add_common, check_counts
from dgm_ext.recipes.sources import (
    EVAL_TAKES,
    MODEL_SAMPLES,
    Source,
    data_spec,
    model_file,
    model_samples,
    read_model,
    split_images,
)

__all__ = ["RECIPE"]

FEATURE_BATCH = 50  # pytorch-fid's default batch for feature passes

EPILOG = """\
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


def add_arguments(ev: argparse.ArgumentParser) -> None:
    """Options of ``eval``."""
    from dgm_ext.data.dataset import VARIANTS
    from dgm_ext.metrics.resize import RESIZE_METHODS

    add_common(ev, progress=False)
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
        choices=list(DATASETS),
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
        choices=list(RESIZE_METHODS),
        help="how images are resized to the feature network's input (recorded with the "
        "result): pytorch-fid (bilinear, default), tf (TensorFlow 1 bilinear, as "
        "torch-fidelity and the original FID code), clean (PIL bicubic, as clean-fid)",
    )
    ev.add_argument(
        "--device",
        default=None,
        help="device of the model and the feature network (default: cpu)",
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
    ev.add_argument("--variant", default=None, choices=list(VARIANTS))
    ev.add_argument("--k", type=int, default=200, help="importance samples (default 200)")
    ev.add_argument("--limit", type=int, default=None, help="evaluate the first N images")
    ev.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per batch (default: 50 for features, 100 for log p(x))",
    )
    ev.add_argument("--json", default=None, help="also write the numbers to this JSON file")


def _resolve_source(args: argparse.Namespace, text: str) -> Source:
    """What ``text`` (A or B of eval) names; model files are sampled here (--n, --seed)."""
    from dgm_ext.metrics.folder import peek_image

    spec = data_spec(text)
    if spec is not None:
        ch = 3 if spec[0] == "cifar10" else 1
        return Source("split", text, dataset=spec[0], split=spec[1], channels=ch)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder; {EVAL_TAKES}")
    if path.is_file() and path.suffix.lower() == ".npz":
        return Source("stats", text, path=path)
    model_path = model_file(path)
    if model_path is None:
        c, h, w = peek_image(path)
        ch = 1 if c == 1 and (h, w) == (28, 28) else 3
        return Source("folder", text, path=path, channels=ch)
    import torch

    kind, model, _ = read_model(model_path, args.ops)
    n = args.n if args.n is not None else MODEL_SAMPLES
    torch.manual_seed(args.seed)
    images = model_samples(kind, model, n, device=args.device)
    label = f"{text} ({n} samples, seed {args.seed})"
    return Source("images", label, images=images, channels=int(images.shape[1]))


def _feature_space(args: argparse.Namespace, sources: list[Source], dataset: str | None):
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
    space = ev.mnist_feature_space(
        dataset, root=args.data_root, device=args.device, verify=not args.no_verify
    )
    return space, dataset


def _features(args: argparse.Namespace, src: Source, space, notes: list[str], probs: bool):
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
        images = split_images(
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
    args: argparse.Namespace, a: Source, b: Source | None, dataset: str | None = None
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
        b = Source("split", f"{ds}:{args.split}", dataset=ds, split=args.split, channels=ch)
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
    src = Source("images", label, images=images, channels=ch, dataset=dataset)
    res = _quality(args, src, None, dataset)
    del res["source"]
    return res


def _eval_gan(args: argparse.Namespace, model: Any, about: dict) -> dict:
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
    return {
        **about,
        "samples": f"{args.n} generator samples of z ~ N(0, I), seed {args.seed}",
        "config": model.config.to_dict(),
        "sample_quality": _sample_quality(args, samples, dataset),
    }


def _eval_vae(args: argparse.Namespace, model: Any, about: dict) -> dict:
    """ELBO (and importance-sampled log p(x) with --k > 0) of a data split under a VAE, on
    ``--device``, and FID/KID/IS of its samples with --metrics."""
    from dgm_ext.data import load_mnist
    from dgm_ext.recipes.vae import default_variant
    from dgm_ext.vae import evaluate_elbo, evaluate_log_likelihood

    if args.variant is not None:
        variant = args.variant
    elif model.config.likelihood == "categorical":
        variant = "grey"  # the categorical likelihood bins grey levels itself
    else:
        variant = default_variant(model.config.likelihood)
    data = load_mnist(
        split=args.split, variant=variant, root=args.data_root, seed=args.data_seed,
        verify=not args.no_verify,
    )  # fmt: skip
    if args.device is not None:
        model.to(args.device)
    res: dict = {**about, "split": args.split, "variant": variant, "ops": model.ops.__name__,
                 "device": str(model.device)}  # fmt: skip
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
    return res


def _eval_realnvp(args: argparse.Namespace, model: Any, about: dict) -> dict:
    """bits/dim of a data split under the flow (and FID/KID/IS of its samples with
    ``--metrics``)."""
    import torch

    from dgm_ext.flows.image import evaluate_bits_per_dim
    from dgm_ext.recipes.realnvp import level_splits

    rgb = model.config.image_shape[0] == 3
    dataset = args.dataset if args.dataset is not None else "cifar10" if rgb else "mnist"
    if (dataset == "cifar10") != rgb:
        raise ValueError(
            f"--dataset {dataset} does not match the model's images {model.config.image_shape}"
        )
    if args.device is not None:
        model.to(args.device)
    train, val, test = level_splits(dataset, args.data_root, verify=not args.no_verify)
    split = {"train": train, "val": val, "test": test}[args.split]
    labels = split.labels if model.num_classes else None  # a conditional flow: bits/dim | y
    res: dict[str, Any] = {
        **about,
        "config": model.config.to_dict(),
        "split": args.split,
        "dataset": dataset,
        "bits_per_dim": evaluate_bits_per_dim(
            model,
            split.images,
            batch_size=args.batch_size,
            seed=args.seed,
            limit=args.limit,
            labels=labels,
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
        res["sample_quality"] = _sample_quality(args, samples, dataset)
    return res


def _check_options(args: argparse.Namespace) -> None:
    """Refuse bad options before any model or data is loaded."""
    from dgm_ext.metrics.evaluate import parse_metrics

    check_counts(
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
    args.feature_batch_size = args.batch_size if args.batch_size is not None else FEATURE_BATCH
    if args.batch_size is None:
        args.batch_size = 100  # log p(x) and bits/dim batches


def _evaluate(args: argparse.Namespace) -> dict:
    _check_options(args)
    if args.reference is not None:  # eval A B: two sources compared
        a = _resolve_source(args, args.checkpoint)
        b = _resolve_source(args, args.reference)
        return _quality(args, a, b)
    spec = data_spec(args.checkpoint)
    source = Path(args.checkpoint)
    if spec is None and not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder; {EVAL_TAKES}")
    path = model_file(source) if spec is None else None
    if path is None:  # a folder or a data split against --dataset's --split
        return _quality(args, _resolve_source(args, args.checkpoint), None)
    if source.suffix.lower() == ".npz":
        raise ValueError(f"{source} is a statistics file: compare it with B (eval A B)")
    kind, model, about = read_model(path, args.ops)
    if args.n is None:
        args.n = MODEL_SAMPLES  # samples of the model, and at most that many reference images
    if kind == "gan":
        return _eval_gan(args, model, about)
    if kind == "realnvp":
        return _eval_realnvp(args, model, about)
    return _eval_vae(args, model, about)


def run(args: argparse.Namespace) -> dict:
    """The numbers of ``eval`` (also written to ``--json``)."""
    res = _evaluate(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2), encoding="utf-8")
    return res


RECIPE = Recipe(
    name="eval",
    help="evaluate a model, or compare image folders, data splits, models and statistics",
    add_arguments=add_arguments,
    run=run,
    epilog=EPILOG,
    raw_help=True,
)
