"""Configuration of the training engine."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compiled import COMPILE_MODES

__all__ = ["TrainerConfig"]

_OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = (None, "constant", "cosine", "step")
PRECISIONS = ("32", "bf16", "16")


@dataclass
class TrainerConfig:
    """Settings of :class:`dgm_ext.train.Trainer`.

    ``batch_size`` is per process: under ``torchrun`` with ``W`` processes the global batch
    is ``W * batch_size`` (each optimisation step averages the gradients of all ranks).
    Training stops after ``epochs`` epochs or ``max_steps`` optimisation steps, whichever
    comes first (either may be ``None``, not both). A ``max_steps`` limit reached inside an
    epoch closes that (partial) epoch: it is validated, logged and checkpointed.

    ``resume=True`` (default) continues from ``<run_dir>/checkpoints/last.pt`` when present;
    if that file cannot be read, from the newest intact ``epoch-XXXX.pt``/``best.pt`` (with
    a warning; the unreadable file is kept as ``last.pt.corrupt-<time>``), or, if there is
    none, stops with an error naming the files. ``resume=False`` starts from scratch and
    moves an earlier run's files into ``<run_dir>/old-<time>/`` (nothing is deleted).

    ``compile_step=True`` (opt-in; models with ``training_step``, one process) compiles the
    model's ``training_step`` and its backward with ``torch.compile`` (``compile_mode``;
    ``"reduce-overhead"`` adds CUDA graphs on a GPU) and keeps the NaN guard on the device:
    with the fused optimiser a non-finite step is skipped there and reported at the next
    host synchronisation (see :mod:`dgm_ext.train.compiled`); the first epoch includes the
    compilation.

    ``lr_schedule`` (``"cosine"``, ``"step"``; with ``warmup_steps``) sets every group's
    learning rate before each optimisation step from the step count alone, so resumes follow
    it exactly (see :mod:`dgm_ext.train.schedule`). ``accumulate_grad_batches=k`` takes one
    optimisation step per ``k`` batches with the mean of their gradients (``global_step``,
    ``max_steps``, ``checkpoint_every`` and the schedule count optimisation steps; an epoch's
    last window may be shorter). ``precision="bf16"`` runs the forward passes under
    ``torch.autocast`` (CPU and CUDA); ``"16"`` adds a ``GradScaler`` (its state is in every
    checkpoint; a step with non-finite gradients is skipped by the scaler instead of stopping
    the run). The fused dgm_ext ops always compute in float32 under autocast. Both need the
    default step (models with their own ``train_step`` can use ``"bf16"``).
    """

    run_dir: str | Path
    epochs: int | None = 10
    max_steps: int | None = None
    batch_size: int = 128
    optimizer: str = "adam"  # "adam" | "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    patience: int | None = None  # early stopping on `monitor`
    monitor: str = "val_loss"
    ema_decay: float | None = None  # EMA of the model (or model.ema_module()), used for validation
    grad_clip: float | None = None  # max global gradient norm per optimiser step
    progress: bool = True  # tqdm bars (rank 0 only)
    tensorboard: bool = False  # needs the optional `tensorboard` package
    val_batch_size: int | None = None  # default: batch_size
    # --- beyond the minimal contract ---
    monitor_mode: str = "min"  # "min": lower is better, "max": higher is better
    min_delta: float = 0.0  # improvement needed to reset the patience counter
    drop_last: bool = False  # drop the incomplete last training batch of each epoch
    num_workers: int = 0  # >0: batches built by a DataLoader with workers
    checkpoint_every: int | None = None  # also checkpoint every N steps (mid-epoch resume)
    keep_last: int = 0  # additionally keep the last N per-epoch checkpoints epoch-XXXX.pt
    log_every: int = 50  # steps between progress-bar / TensorBoard step logs
    check_grads: bool = False  # also stop on non-finite gradient norms
    device: str | None = None  # default: cuda:<LOCAL_RANK> when available, else cpu
    find_unused_parameters: bool = False  # passed to DistributedDataParallel
    resume: bool = True  # resume from <run_dir>/checkpoints/last.pt when present (see above)
    eps: float = 1e-8  # Adam epsilon
    fused_optimizer: bool = True  # torch's fused Adam/AdamW kernel where the device has one
    compile_step: bool = False  # torch.compile training_step and its backward (see below)
    compile_mode: str | None = None  # torch.compile mode, e.g. "reduce-overhead" (CUDA graphs)
    # --- learning-rate schedule (per optimisation step; see dgm_ext.train.schedule) ---
    lr_schedule: str | None = None  # None/"constant" | "cosine" | "step"
    warmup_steps: int = 0  # linear warm-up from lr/warmup_steps to lr over the first steps
    lr_min_ratio: float = 0.0  # cosine: the final lr as a fraction of lr
    lr_step_size: int | None = None  # step: multiply by lr_gamma every lr_step_size steps
    lr_gamma: float = 0.1
    # --- gradient accumulation and mixed precision ---
    accumulate_grad_batches: int = 1  # one optimisation step per this many batches
    precision: str = "32"  # "32" | "bf16" (autocast) | "16" (autocast + GradScaler)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, recorded in config.json

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.betas = tuple(self.betas)  # type: ignore[assignment]

        def positive_int(name: str, allow_none: bool, minimum: int = 1) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"TrainerConfig.{name} must be an int >= {minimum}, got {v!r}")

        positive_int("epochs", True, 0)
        positive_int("max_steps", True, 0)
        positive_int("batch_size", False)
        positive_int("val_batch_size", True)
        positive_int("patience", True)
        positive_int("num_workers", False, 0)
        positive_int("checkpoint_every", True)
        positive_int("keep_last", False, 0)
        positive_int("log_every", False)
        if self.epochs is None and self.max_steps is None:
            raise ValueError("TrainerConfig.epochs and TrainerConfig.max_steps cannot both be None")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"TrainerConfig.optimizer must be one of {_OPTIMIZERS}, got "
                             f"{self.optimizer!r}")  # fmt: skip
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainerConfig.lr must be a finite number > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"TrainerConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainerConfig.betas must be two numbers in [0, 1), got {self.betas}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"TrainerConfig.ema_decay must be in (0, 1), got {self.ema_decay!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainerConfig.grad_clip must be > 0, got {self.grad_clip!r}")
        if self.monitor_mode not in ("min", "max"):
            raise ValueError(
                f"TrainerConfig.monitor_mode must be 'min' or 'max', got {self.monitor_mode!r}"
            )
        if not self.min_delta >= 0:
            raise ValueError(f"TrainerConfig.min_delta must be >= 0, got {self.min_delta!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"TrainerConfig.compile_mode must be one of {COMPILE_MODES}, got "
                f"{self.compile_mode!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"TrainerConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        positive_int("warmup_steps", False, 0)
        positive_int("lr_step_size", True)
        positive_int("accumulate_grad_batches", False)
        if self.lr_schedule == "step" and self.lr_step_size is None:
            raise ValueError("TrainerConfig.lr_schedule='step' needs lr_step_size (steps)")
        if not 0 <= self.lr_min_ratio <= 1:
            raise ValueError(
                f"TrainerConfig.lr_min_ratio must be in [0, 1], got {self.lr_min_ratio!r}"
            )
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"TrainerConfig.lr_gamma must be in (0, 1], got {self.lr_gamma!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"TrainerConfig.precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        if self.compile_step and (self.precision != "32" or self.accumulate_grad_batches > 1):
            raise ValueError(
                "TrainerConfig.compile_step does not combine with precision != '32' or "
                "accumulate_grad_batches > 1 yet; use one or the other"
            )
        if not isinstance(self.extra, dict):
            raise ValueError(f"TrainerConfig.extra must be a dict, got {type(self.extra).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the settings (paths as strings, tuples as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Path):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out
