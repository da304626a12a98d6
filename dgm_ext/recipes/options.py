"""Options the recipes share, declared once for the command line and the Python API.

Each ``add_*`` function adds a group of options to an ``argparse`` parser (the recipes build
their parsers from them; the Python functions of :mod:`dgm_ext.recipes` take the same names
as keywords, with the same defaults). The ``check_*`` functions refuse bad values in the
options' own names (``--epochs must be >= 1, got 0``) before any data is loaded.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

__all__ = [
    "COMPILE_MODES",
    "DATASETS",
    "RESUME_HELP",
    "add_common",
    "add_compile",
    "add_trainer_options",
    "add_training",
    "check_counts",
    "check_rates",
    "out_dir",
    "run_context",
    "setup",
    "trainer_options",
]

DATASETS = ("mnist", "fashion-mnist", "cifar10")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

RESUME_HELP = (
    "an --out that already holds a run is resumed from its checkpoints/last.pt (the console "
    "says so); --fresh moves it aside to <out>.old-<timestamp> first (nothing is deleted) and "
    "starts over; --config RUN reruns or continues a run with the options it was started with"
)


def add_common(
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


def add_training(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--fresh`` of the commands that train into an ``--out``."""
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


def add_compile(p: argparse.ArgumentParser) -> None:
    """``--compile [MODE]``: the Trainer's compiled step."""
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=list(COMPILE_MODES),
        metavar="MODE",
        help="compile the training step with torch.compile (MODE: default, reduce-overhead "
        "for CUDA graphs on a GPU, max-autotune, max-autotune-no-cudagraphs); the NaN guard "
        "stays on (TrainerConfig.compile_step)",
    )


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


def setup(args: argparse.Namespace) -> None:
    """Threads and seed; ``--device`` and ``--ops`` checked before any data is loaded."""
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
    """Refuse an ``--ops`` that names no op backend."""
    from dgm_ext.ops import resolve_ops

    try:
        resolve_ops(ops)  # "fused", "reference" or an importable module name
    except ImportError:
        raise ValueError(
            f"--ops must be 'fused' or 'reference' (or an importable op module), got {ops!r}"
        ) from None


def _check_device(device: str) -> None:
    """Refuse a bad ``--device`` (same rules as the trainer)."""
    from dgm_ext.train import resolve_device

    try:
        resolve_device(device)  # a bad string, or a CUDA ordinal that is not visible
    except RuntimeError as exc:
        raise ValueError(f"--device {device}: {exc}") from None


def check_counts(args: argparse.Namespace, **lows: int) -> None:
    """Refuse ``--name`` values below ``lows[name]`` (``None``, an unset option, passes)."""
    for name, low in lows.items():
        v = getattr(args, name)
        if v is not None and v < low:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {v}")


def check_rates(args: argparse.Namespace, *names: str) -> None:
    """Refuse learning rates that are not finite numbers > 0."""
    for name in names:
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number > 0, got {v}")


def out_dir(args: argparse.Namespace, name: str) -> Path:
    """``--out`` (checked: it can be created) or ``runs/<name>-<time>``; creates nothing."""
    from dgm_ext.experiments.common import check_run_dir, default_run_dir

    return check_run_dir(args.out if args.out is not None else default_run_dir(name))


def run_context(args: argparse.Namespace, name: str, out: Path, trainer: dict) -> Any:
    """The :class:`~dgm_ext.experiments.common.RunContext` of a ``train`` command's options
    (``trainer``: its checked TrainerConfig settings); options a command lacks keep their
    defaults (no ``--compile``: eager; no ``--data-seed``: 0)."""
    from dgm_ext.experiments.common import RunContext

    return RunContext(
        name=name,
        out=out,
        seed=args.seed,
        data_seed=getattr(args, "data_seed", 0),
        data_root=args.data_root,
        ops=args.ops,
        progress=not args.no_progress,
        device=args.device,
        fresh=args.fresh,
        compile=getattr(args, "compile", None),
        verify=not args.no_verify,
        trainer=trainer,
    )
