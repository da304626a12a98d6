"""families-mnist: the VAE, the GAN and RealNVP side by side on MNIST.

For one trained model of each family (``--run "vae=PATH,gan=PATH,realnvp=PATH"``; defaults:
the files the three reproduce commands write under ``runs/``): FID and KID of ``n`` samples
(10 000; ``--quick``: 500) against as many MNIST test images in the feature space of the
library's MNIST classifier (the floor: as many training images); the likelihood where the
model defines one (VAE: test log p(x) in nats on statically binarised MNIST, importance
sampling with K = 200 on the first 2 000 test images; RealNVP: test bits/dim on the 8-bit
scale, all 10 000); parameters; seconds per training epoch (median of the run's
``metrics.jsonl``); the command that trained it (from its experiment's ``config.json``).
Samples: VAE decoder means of z ~ N(0, I), GAN generator outputs (its EMA when the run kept
one), RealNVP at temperature 1 (clamped to [0, 1]); a 25-sample grid of each.

``--quick`` trains three tiny models itself (1 epoch each on 1 000 images) and a small
classifier, so that the whole path runs in about a minute; its numbers mean nothing.
A family whose file is missing is listed with the command that makes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dgm_ext.experiments.common import RunContext, Table, load_splits

FAMILIES = ("vae", "gan", "realnvp")
DEFAULTS = {
    "vae": "runs/vae-elbo/model.pt",
    "gan": "runs/gan-mnist/train/generator.pt",
    "realnvp": "runs/realnvp-mnist/mlp/model.pt",
}
COMMANDS = {
    "vae": "dgm-ext reproduce vae-elbo --out runs/vae-elbo",
    "gan": "dgm-ext reproduce gan-mnist --out runs/gan-mnist",
    "realnvp": "dgm-ext reproduce realnvp-mnist --out runs/realnvp-mnist",
}
N_SAMPLES = 10_000
IS_K, IS_LIMIT = 200, 2000
# training config of the full-size run's feature classifier (None: the library's default);
# a module constant, like the sizes above, so that a test can run the full-size path small
CLASSIFIER: dict[str, Any] | None = None


def _parse_paths(value: Any) -> dict[str, Path]:
    paths = {k: Path(v) for k, v in DEFAULTS.items()}
    if value is None:
        return paths
    for item in str(value).split(","):
        key, sep, path = item.strip().partition("=")
        if not sep or key not in FAMILIES or not path:
            raise ValueError(
                f"--run must be a comma-separated list of FAMILY=PATH with FAMILY in "
                f"{', '.join(FAMILIES)}, got {value!r}"
            )
        paths[key] = Path(path)
    return paths


def _seconds_per_epoch(model_path: Path) -> tuple[float, int]:
    """Median training seconds per epoch and epochs, from the run folder's metrics.jsonl
    (less the grid/evaluation seconds the GAN and flow runs record in the same rows)."""
    metrics = model_path.parent / "metrics.jsonl"
    if not metrics.is_file():
        return float("nan"), 0
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    times = sorted(
        r["time_s"] - r.get("grid_s", 0.0) - r.get("eval_s", 0.0) for r in rows if "time_s" in r
    )
    return (float(times[len(times) // 2]) if times else float("nan")), len(rows)


def _command(family: str, model_path: Path) -> str:
    """The command that trained ``model_path``: from the ``config.json`` of the experiment
    run holding it (its folder or the one above), else the family's reproduce command."""
    for folder in (model_path.parent, model_path.parent.parent):
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            continue
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(cfg, dict) or "name" not in cfg or "out" not in cfg:
            continue  # a trainer's config.json, not an experiment's
        cmd = f"dgm-ext reproduce {cfg['name']}"
        if cfg.get("epochs"):
            cmd += f" --epochs {cfg['epochs']}"
        if (cfg.get("extra") or {}).get("run"):
            cmd += f" --run {cfg['extra']['run']}"
        if cfg.get("seed"):
            cmd += f" --seed {cfg['seed']}"
        cmd += f" --out {folder.name}"
        if folder != model_path.parent:
            cmd += f" (its {model_path.parent.name}/)"
        return cmd
    return COMMANDS[family]


def _train_quick(ctx: RunContext) -> dict[str, Path]:
    """Three tiny models (1 epoch, 1 000 images) in ``<out>/quick-models``."""
    from dgm_ext.data import ImageDataset
    from dgm_ext.experiments.common import fit_model
    from dgm_ext.experiments.gan_common import GANTraining
    from dgm_ext.experiments.realnvp_mnist import QUICK_MODELS, FlowTraining
    from dgm_ext.flows.realnvp import build_realnvp
    from dgm_ext.gan import GAN, GANConfig
    from dgm_ext.vae import build_vae, save_vae

    root = ctx.out / "quick-models"
    paths = {
        "vae": root / "vae" / "model.pt",
        "gan": root / "gan" / "generator.pt",
        "realnvp": root / "realnvp" / "model.pt",
    }
    torch.manual_seed(ctx.seed)
    train, val, _ = load_splits(ctx, "static", 1000, 200, 1)
    vae = build_vae(arch="mlp", latent_dim=8, hidden=64, ops=ctx.ops)
    fit_model(ctx, vae, train, val, paths["vae"].parent, 1, batch_size=64, lr=1e-3)
    save_vae(vae, paths["vae"])
    grey, _, _ = load_splits(ctx, "grey", 1000, 1, 1)
    gan = GAN(GANConfig(arch="mlp"), ops=ctx.ops)
    GANTraining(ctx, gan, paths["gan"].parent, epochs=1, batch_size=64).fit(
        ImageDataset(grey.images, grey.labels, "grey")
    )
    levels, lval, _ = load_splits(ctx, "levels", 1000, 200, 1)
    flow = build_realnvp(ops=ctx.ops, **QUICK_MODELS["mlp"])
    FlowTraining(ctx, flow, paths["realnvp"].parent, epochs=1).fit(levels, lval)
    return paths


@torch.no_grad()
def _samples(family: str, path: Path, n: int, seed: int, ops: str) -> tuple[torch.Tensor, Any]:
    """``(n samples in [0, 1] on the CPU, the model)``."""
    torch.manual_seed(seed)
    if family == "vae":
        from dgm_ext.vae import load_vae

        model = load_vae(path, ops=ops).eval()
        images = torch.cat([model.sample(min(1000, n - i)).cpu() for i in range(0, n, 1000)])
    elif family == "gan":
        from dgm_ext.gan import load_gan

        model = load_gan(path, ops=ops)
        images = model.sample(n, generator=torch.Generator().manual_seed(seed))
    else:
        from dgm_ext.flows.realnvp import load_realnvp

        model = load_realnvp(path, ops=ops).eval()
        images = torch.cat([model.sample_images(min(500, n - i)).cpu() for i in range(0, n, 500)])
    return images.clamp(0, 1), model


def _likelihood(family: str, model: Any, ctx: RunContext, limit: int) -> str:
    if family == "vae":
        from dgm_ext.vae import evaluate_log_likelihood

        _, _, test = load_splits(ctx, "static", 1, 1, None)
        res = evaluate_log_likelihood(model, test, k=IS_K, limit=limit)
        return (
            f"log p(x) {res['log_px']:.2f} ± {res['log_px_se']:.2f} nats "
            f"(binarised, IS K={IS_K}, {limit} test images)"
        )
    if family == "realnvp":
        from dgm_ext.flows.image import evaluate_bits_per_dim

        _, _, test = load_splits(ctx, "levels", 1, 1, None)
        res = evaluate_bits_per_dim(model, test.images, limit=None if limit >= IS_LIMIT else limit)
        return f"{res['bpd']:.3f} ± {res['bpd_se']:.3f} bits/dim (8-bit, {res['n']} test images)"
    return "— (no likelihood)"


def check(ctx: RunContext) -> None:
    """Refuse a bad ``--run`` before the run directory is created."""
    if not ctx.quick:
        _parse_paths(ctx.extra.get("run"))


def run(ctx: RunContext) -> dict:
    """Measure one model of each family; write the comparison table and sample grids."""
    from dgm_ext.experiments.gan_common import SampleQuality
    from dgm_ext.experiments.gan_mnist import QUICK_CLASSIFIER
    from dgm_ext.metrics import mnist_feature_space
    from dgm_ext.plots import save_image_grid

    if ctx.quick:
        paths, n, limit, classifier = _train_quick(ctx), 500, 100, QUICK_CLASSIFIER
    else:
        paths, n, limit = _parse_paths(ctx.extra.get("run")), N_SAMPLES, IS_LIMIT
        classifier = CLASSIFIER
    _, _, test = load_splits(ctx, "grey", 1, 1, None)
    space = mnist_feature_space(
        "mnist", root=ctx.data_root, train_config=classifier, verify=ctx.verify
    )
    quality = SampleQuality(space, test.images[:n], n)
    results: dict[str, Any] = {"n_samples": n, "feature_net": space.name, "families": {}}
    train, _, _ = load_splits(ctx, "grey", n, 1, 1)
    floor = quality.measure(train.images[:n])
    results["floor"] = floor
    rows = []
    for family in FAMILIES:
        path = paths[family]
        if not path.is_file():
            ctx.log(f"{family}: no model at {path}; make it with: {COMMANDS[family]}")
            rows.append([family, "missing", "", "", "", "", "", COMMANDS[family]])
            results["families"][family] = {"missing": str(path)}
            continue
        ctx.log(f"{family}: {n} samples of {path}")
        images, model = _samples(family, path, n, ctx.seed, ctx.ops)
        save_image_grid(images[:25], ctx.path("figures", f"{family}_samples.png"), 5, family)
        q = quality.measure(images)
        like = _likelihood(family, model, ctx, limit)
        params = sum(p.numel() for p in model.parameters())
        if family == "gan":
            params = sum(p.numel() for p in model.generator.parameters())
        sec, epochs = _seconds_per_epoch(path)
        ctx.log(f"{family}: FID {q['fid']:.2f}, KID {q['kid']:.2f}; {like}")
        results["families"][family] = {
            "path": str(path),
            **q,
            "likelihood": like,
            "parameters": params,
            "seconds_per_epoch": sec,
            "epochs": epochs,
        }
        rows.append(
            [
                family,
                f"{q['fid']:.2f}",
                f"{q['kid']:.2f} ± {q['kid_std']:.2f}",
                like,
                f"{params:,}" + (" (generator)" if family == "gan" else ""),
                epochs,
                sec,
                "(quick: trained here)" if ctx.quick else _command(family, path),
            ]
        )
    rows.append(
        ["floor: training images", f"{floor['fid']:.2f}",
         f"{floor['kid']:.2f} ± {floor['kid_std']:.2f}", "", "", "", "", ""]
    )  # fmt: skip
    table = Table(
        "families-mnist: the three families on MNIST",
        ["family", "FID", "KID", "likelihood", "parameters", "epochs", "s/epoch", "command"],
        rows,
        notes=(
            f"FID/KID of {n} samples against {n} MNIST test images in the feature space of "
            f"{space.name} (128-d penultimate layer; not comparable with Inception FIDs). "
            "The likelihood columns differ in kind: the VAE's is in nats on binarised images, "
            "RealNVP's in bits/dim on 8-bit pixels; the GAN has none. s/epoch from each run's "
            "own log (its machine and load). "
            + ("QUICK run: tiny models, 1 epoch each; numbers mean nothing." if ctx.quick else "")
        ),
    )
    results.update({"_title": "families-mnist: VAE vs GAN vs RealNVP", "_tables": [table]})
    return results
