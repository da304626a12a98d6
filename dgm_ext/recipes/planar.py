"""``dgm-ext train planar``: one planar-flow fit to a 2-D data set (ML) or density (KL)."""

from __future__ import annotations

import argparse
import json
import math

from dgm_ext.recipes.base import Recipe, save_options
from dgm_ext.recipes.options import add_common, check_counts, check_rates, out_dir

__all__ = ["RECIPE"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``train planar``."""
    from dgm_ext.flows.densities import TARGETS

    add_common(p, data=False, data_seed=False)  # 2-D densities: no image data
    p.add_argument("--out", default=None, help="run directory (default runs/planar-<time>)")
    p.add_argument(
        "--mode",
        default="ml",
        choices=["ml", "kl"],
        help="ml: maximum likelihood on samples; kl: reverse KL to the density (default ml)",
    )
    p.add_argument(
        "--target",
        "--data",
        dest="target",
        default="arcs",
        help=f"density / data set: {', '.join(TARGETS)} (default arcs)",
    )
    p.add_argument("--k", type=int, default=8, help="planar layers (default 8)")
    p.add_argument("--steps", type=int, default=20_000, help="RMSprop steps (default 20000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4, help="RMSprop learning rate")
    p.add_argument(
        "--init-scale", type=float, default=0.01, help="u, w ~ N(0, s^2), b = 0 (default 0.01)"
    )
    p.add_argument(
        "--eval-samples", type=int, default=100_000, help="samples of the NLL / KL estimate"
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start over when --out already exists: move it aside to <out>.old-<timestamp>",
    )


def run(args: argparse.Namespace) -> dict:
    """Fit (or find the same fit in ``--out``), save ``flow.pt``, evaluate, draw figures."""
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
    check_counts(args, k=1, steps=1, batch_size=1, eval_samples=2)
    check_rates(args, "lr")
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
    out = out_dir(args, "planar")
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
    save_options(out, RECIPE, args)
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
    return res


RECIPE = Recipe(
    name="train planar",
    help="fit a planar flow to a 2-D data set (ml) or density (kl)",
    add_arguments=add_arguments,
    run=run,
    description="One planar-flow fit (SPEC §3 planar-2d setup): maximum likelihood on exact "
    "samples of --target (--mode ml) or reverse KL to its density (--mode kl); writes "
    "flow.pt, metrics.jsonl, eval.json (held-out NLL ± SE beside the entropy floor, or "
    "KL(q||p) ± SE) and figures. Runs on the CPU.",
    epilog="an --out that already holds this fit (same settings) is evaluated again "
    "without training; one with other settings is refused unless --fresh moves it aside "
    "to <out>.old-<timestamp> (nothing is deleted); --config RUN starts from the options "
    "recorded in RUN",
    options_file="planar_args.json",
)
