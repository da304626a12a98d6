"""Options shared by the ``train`` commands of :mod:`dgm_ext.cli` and
:mod:`dgm_ext._cli_realnvp`: the Trainer's settings (``TrainerConfig`` fields), with their
choices taken from the config module and one-line errors in the options' own names."""

from __future__ import annotations

import argparse
import math

__all__ = ["add_trainer_options", "trainer_options"]


def add_trainer_options(p: argparse.ArgumentParser, grad_clip: float | None = None) -> None:
    """The Trainer's settings every training command offers (TrainerConfig fields)."""
    from dgm_ext.train.config import LR_SCHEDULES, PRECISIONS

    shown = "off" if grad_clip is None else f"{grad_clip:g}"
    p.add_argument(
        "--grad-clip",
        type=float,
        default=grad_clip,
        help=f"clip the gradient norm of each optimiser step (default {shown}; 0: off)",
    )
    p.add_argument(
        "--lr-schedule",
        default=None,
        choices=[s for s in LR_SCHEDULES if s is not None],
        help="learning-rate schedule over the optimisation steps (default constant)",
    )
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps")
    p.add_argument("--lr-min-ratio", type=float, default=0.0, help="cosine: final lr / lr")
    p.add_argument("--lr-step-size", type=int, default=None, help="step: steps per decay")
    p.add_argument("--lr-gamma", type=float, default=0.1, help="step: decay factor")
    p.add_argument(
        "--accumulate-grad-batches",
        type=int,
        default=1,
        help="one optimisation step per N batches (mean gradient)",
    )
    p.add_argument(
        "--precision",
        default="32",
        choices=list(PRECISIONS),
        help="32, bf16 (autocast) or 16 (autocast + GradScaler); the fused ops run in float32",
    )


def trainer_options(args: argparse.Namespace, default_step: bool = True) -> dict:
    """TrainerConfig settings of :func:`add_trainer_options`, checked (one-line errors).
    ``default_step=False`` (models with their own ``train_step``, e.g. GANs) refuses what
    needs the Trainer's default step: gradient accumulation and fp16."""
    from dgm_ext.train import TrainerConfig

    clip = args.grad_clip
    if clip is not None and not (math.isfinite(clip) and clip >= 0):
        raise ValueError(f"--grad-clip must be a finite number >= 0 (0: off), got {clip}")
    opts = {
        "grad_clip": clip if clip else None,
        "lr_schedule": args.lr_schedule,
        "warmup_steps": args.warmup_steps,
        "lr_min_ratio": args.lr_min_ratio,
        "lr_step_size": args.lr_step_size,
        "lr_gamma": args.lr_gamma,
        "accumulate_grad_batches": args.accumulate_grad_batches,
        "precision": args.precision,
    }
    try:
        TrainerConfig(run_dir=".", **opts)
    except ValueError as exc:  # "TrainerConfig.lr_gamma ..." -> "--lr-gamma ..."
        msg = str(exc)
        for key in opts:
            msg = msg.replace(f"TrainerConfig.{key}", "--" + key.replace("_", "-"))
        raise ValueError(msg) from None
    if not default_step and (opts["accumulate_grad_batches"] > 1 or opts["precision"] == "16"):
        raise ValueError(
            "--accumulate-grad-batches > 1 and --precision 16 need the Trainer's default step; "
            "this model makes its own optimiser steps (use --precision bf16)"
        )
    return opts
